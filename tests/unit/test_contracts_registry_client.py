"""ConfluentRegistry's caching and error mapping, against a scripted stand-in registry on loopback.

The real registry (Apicurio) is in tests/contract/; here the answers are scripted so the
tests can count requests, fail on purpose and change the latest version.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from streams.failures import FailureKind, classify
from streams.serde import AvroSerde, EmbeddedRegistry, UnknownSchemaError
from streams.serde.confluent import ConfluentRegistry, RegistryUnavailableError, SchemaRegistryError
from streams.serde.factory import PinnedRegistry, registry_from_url
from streams.serde.registry import DEFAULT_SCHEMAS_DIR

SUBJECT = "test.Thing"


def _schema(*extra: str) -> str:
    fields = [{"name": "id", "type": "string"}, *({"name": n, "type": ["null", "string"], "default": None}
                                                 for n in extra)]
    return json.dumps({"type": "record", "name": "Thing", "namespace": "test", "fields": fields})


class StandInRegistry:
    """Answers GET requests from ``routes`` (path → (status, JSON body)) and logs every request.

    Routes and counts go by the path alone: the client adds query parameters of its own
    (``?offset=0&limit=-1``, ``?deleted=False``) that name no other resource.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(("GET", self.path, dict(self.headers)))
                status, body = registry.routes.get(urlsplit(self.path).path,
                                                   (404, {"error_code": 40403, "message": "not found"}))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/apis/ccompat/v7"

    def count(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if urlsplit(p).path == "/apis/ccompat/v7" + path)

    def serve(self, path: str, status: int, body: Any) -> None:
        self.routes["/apis/ccompat/v7" + path] = (status, body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def stand_in() -> Iterator[StandInRegistry]:
    server = StandInRegistry()
    server.serve("/schemas/ids/7", 200, {"schema": _schema()})
    server.serve("/schemas/ids/7/versions", 200, [{"subject": SUBJECT, "version": 1}])
    server.serve(f"/subjects/{SUBJECT}/versions/latest", 200, {"subject": SUBJECT, "version": 1, "id": 7,
                                                                "schema": _schema()})
    yield server
    server.close()


def _wait_until(condition: Any, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def test_a_schema_id_is_fetched_once_and_then_served_from_the_cache(stand_in: StandInRegistry) -> None:
    registry = ConfluentRegistry(stand_in.url)
    first = registry.by_id(7)
    for _ in range(100):
        assert registry.by_id(7) is first
    assert stand_in.count("/schemas/ids/7") == 1
    assert (first.subject, first.version, first.schema_id) == (SUBJECT, 1, 7)


def test_an_unknown_id_is_remembered_for_a_while_so_poison_bursts_cost_one_request(stand_in: StandInRegistry) -> None:
    registry = ConfluentRegistry(stand_in.url, missing_ttl=0.3)
    for _ in range(50):
        with pytest.raises(UnknownSchemaError, match="schema id 99 is not registered"):
            registry.by_id(99)
    assert stand_in.count("/schemas/ids/99") == 1
    time.sleep(0.35)
    with pytest.raises(UnknownSchemaError):
        registry.by_id(99)
    assert stand_in.count("/schemas/ids/99") == 2


def test_latest_is_cached_then_refreshed_in_the_background_without_waiting(stand_in: StandInRegistry) -> None:
    registry = ConfluentRegistry(stand_in.url, latest_ttl=0.2)
    assert registry.latest(SUBJECT).version == 1
    assert registry.latest(SUBJECT).version == 1
    assert stand_in.count(f"/subjects/{SUBJECT}/versions/latest") == 1

    stand_in.serve(f"/subjects/{SUBJECT}/versions/latest", 200, {"subject": SUBJECT, "version": 2, "id": 8,
                                                                  "schema": _schema("note")})
    time.sleep(0.25)
    assert registry.latest(SUBJECT).version == 1  # stale, answered at once; a refresh is under way
    _wait_until(lambda: registry.latest(SUBJECT).version == 2)
    assert registry.by_id(8).definition == json.loads(_schema("note"))  # the refresh filled the id cache too
    assert stand_in.count("/schemas/ids/8") == 0
    registry.close()


def test_a_failed_refresh_keeps_serving_the_last_known_latest(stand_in: StandInRegistry) -> None:
    registry = ConfluentRegistry(stand_in.url, latest_ttl=0.1)
    known = registry.latest(SUBJECT)
    stand_in.serve(f"/subjects/{SUBJECT}/versions/latest", 503, {"error_code": 50301, "message": "down"})
    time.sleep(0.15)
    assert registry.latest(SUBJECT) is known
    _wait_until(lambda: stand_in.count(f"/subjects/{SUBJECT}/versions/latest") == 2)
    assert registry.latest(SUBJECT) is known
    registry.close()


def test_a_registry_server_error_is_transient_and_names_the_registry(stand_in: StandInRegistry) -> None:
    stand_in.serve("/schemas/ids/5", 503, {"error_code": 50301, "message": "storage unavailable"})
    registry = ConfluentRegistry(stand_in.url)
    with pytest.raises(RegistryUnavailableError) as caught:
        registry.by_id(5)
    failure = classify(caught.value)
    assert failure.kind is FailureKind.TRANSIENT
    assert (failure.connector, failure.status) == ("schema-registry", 503)
    assert "storage unavailable" in failure.message


def test_a_server_error_is_not_retried_by_the_client_the_pipeline_retries_it(stand_in: StandInRegistry) -> None:
    stand_in.serve("/schemas/ids/5", 503, {"error_code": 50301, "message": "storage unavailable"})
    registry = ConfluentRegistry(stand_in.url)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError):
        registry.by_id(5)
    assert time.monotonic() - started < 0.5  # no blocking back-off on the event loop
    assert stand_in.count("/schemas/ids/5") == 1


def test_a_registry_that_accepts_but_never_answers_times_out_as_transient() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are accepted by the kernel; nothing ever answers
    try:
        registry = ConfluentRegistry(f"http://127.0.0.1:{silent.getsockname()[1]}/apis/ccompat/v7", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError, match=r"did not answer GET .*/schemas/ids/1") as caught:
            registry.by_id(1)
        assert time.monotonic() - started < 3.0
        assert classify(caught.value).kind is FailureKind.TRANSIENT
    finally:
        silent.close()


def test_a_refused_request_is_a_registry_error_with_its_code(stand_in: StandInRegistry) -> None:
    stand_in.serve("/schemas/ids/6", 401, {"error_code": 40101, "message": "unauthorized"})
    with pytest.raises(SchemaRegistryError) as caught:
        ConfluentRegistry(stand_in.url).by_id(6)
    assert (caught.value.status, caught.value.error_code) == (401, 40101)


def test_schemas_that_are_not_avro_or_use_references_are_refused(stand_in: StandInRegistry) -> None:
    stand_in.serve("/schemas/ids/11", 200, {"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"})
    stand_in.serve("/schemas/ids/12", 200, {"schema": _schema(), "references": [{"name": "x", "subject": "y",
                                                                                 "version": 1}]})
    registry = ConfluentRegistry(stand_in.url)
    with pytest.raises(UnknownSchemaError, match="PROTOBUF schema, not Avro"):
        registry.by_id(11)
    with pytest.raises(UnknownSchemaError, match="schema references"):
        registry.by_id(12)


def test_credentials_in_the_url_become_basic_auth_and_never_show(stand_in: StandInRegistry) -> None:
    url = stand_in.url.replace("http://", "http://svc-streams:s3cr%40t@")
    registry = ConfluentRegistry(url)
    registry.by_id(7)
    _, _, headers = stand_in.requests[0]
    assert headers["Authorization"] == "Basic c3ZjLXN0cmVhbXM6czNjckB0"  # svc-streams:s3cr@t
    assert "s3cr" not in registry.url and "s3cr" not in repr(registry)


def test_an_id_known_only_to_the_registry_decodes_through_the_serde(stand_in: StandInRegistry) -> None:
    registry = ConfluentRegistry(stand_in.url)
    serde = AvroSerde(registry)
    data = serde.encode(SUBJECT, {"id": "a"})
    assert data[:5] == b"\x00\x00\x00\x00\x07"
    assert serde.decode(data, SUBJECT) == {"id": "a"}


async def test_prefetch_and_warm_fill_the_caches_off_the_event_loop(stand_in: StandInRegistry) -> None:
    registry = ConfluentRegistry(stand_in.url)
    await registry.warm([SUBJECT])
    await registry.prefetch([7, 7, 99])  # an unknown id is left for decode to report
    before = len(stand_in.requests)
    assert registry.latest(SUBJECT).schema_id == 7
    assert registry.by_id(7).subject == SUBJECT
    assert len(stand_in.requests) == before


def test_registry_from_url_picks_the_mode() -> None:
    assert isinstance(registry_from_url(None), EmbeddedRegistry)
    assert isinstance(registry_from_url("  "), EmbeddedRegistry)
    registry_mode = registry_from_url("http://127.0.0.1:8081/apis/ccompat/v7", schemas_dir=DEFAULT_SCHEMAS_DIR)
    assert isinstance(registry_mode, PinnedRegistry)
    without_folder = registry_from_url("http://127.0.0.1:8081/apis/ccompat/v7")
    assert isinstance(without_folder, ConfluentRegistry)  # the registry's latest versions, no folder of ours
    assert registry_mode.remote.url == "http://127.0.0.1:8081/apis/ccompat/v7"
    with pytest.raises(ValueError, match="must be http"):
        registry_from_url("127.0.0.1:8081")
