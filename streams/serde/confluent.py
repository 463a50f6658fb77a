"""A cached client for any Confluent-compatible Schema Registry (Confluent, Apicurio's ccompat API, ...).

    registry = ConfluentRegistry("http://127.0.0.1:8081/apis/ccompat/v7")
    schema_id = registry.register("dev.streams.orders.OrderPlaced", definition)
    serde = AvroSerde(registry)          # by_id() and latest(), as EmbeddedRegistry

The HTTP is confluent-kafka's ``SchemaRegistryClient`` (the synchronous one, maintained by
Confluent with the Kafka client, and the same one the interop tests check our records against):
it does the connection pooling, TLS, basic auth and the REST paths. This module keeps what the
pipeline needs on top of it: the caches below, and errors the failure classification understands.

Lookups are synchronous, because the serde is: ``AvroSerde.decode``/``encode`` run once per record
on the worker's event loop. They stay off the network in steady state:

- ``by_id``: a schema id never changes meaning, so an id fetched once is cached for the life of
  the process, parsed. Only the first record with a new id waits for the registry (one round
  trip on loopback is about a millisecond). Ids the registry does not know are remembered for
  ``missing_ttl`` seconds, so a burst of poison records costs one request, not one per record.
- ``latest``: cached for ``latest_ttl`` seconds. After that the cached schema is still returned
  at once and one background thread asks the registry again (stale-while-revalidate), so the
  hot path waits for the registry only the very first time it sees a subject; if the registry
  is down meanwhile, the last known schema keeps serving.
- ``warm`` and ``prefetch`` are async: they do those first fetches in a worker thread, so a
  worker can load its subjects before it consumes, and the engine can fetch the ids of a batch
  before decoding it, keeping even first-time misses off the event loop.

A fully async client would put an ``await`` on every record's decode for what is, after the
first record, a dictionary hit; a blocking call on a miss, with these caches, costs less.
The client is told not to retry (``max.retries`` 0): a blocking retry with back-off would stall
the event loop for seconds, and a failed lookup is already retried by the pipeline's retry tiers.

Errors: an unknown id, subject or version raises ``UnknownSchemaError`` (the record is poison);
a registry that does not answer, or answers 5xx/408/429, raises ``RegistryUnavailableError``,
a ``TransientError``, so the event is retried rather than dead-lettered as poison. Any other
refusal is a ``SchemaRegistryError`` (``IncompatibleSchemaError`` for a 409) with its status
and the registry's error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError as _ClientError

from connectors.errors import TransientError
from streams.serde.registry import RegisteredSchema, UnknownSchemaError

log = logging.getLogger("streams.serde.registry")

CONNECTOR_NAME = "schema-registry"
_UNKNOWN_CODES = {40401, 40402, 40403}  # subject, version, schema not found
_TRANSIENT_STATUSES = {408, 429}
_T = TypeVar("_T")


def _request_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's "no usable response" errors (connect, read, timeout, protocol, ...).

    confluent-kafka's client uses httpx2 when it is installed, else httpx; either may be here.
    """
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(name).RequestError)
    return tuple(found)


_REQUEST_ERRORS = _request_errors()


class RegistryUnavailableError(TransientError):
    """The registry did not answer, or answered with a server error; may work later."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, connector=CONNECTOR_NAME, status=status)


class SchemaRegistryError(RuntimeError):
    """The registry refused a request (bad credentials, an invalid schema, ...)."""

    def __init__(self, message: str, *, status: int, error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class IncompatibleSchemaError(SchemaRegistryError):
    """The registry refused to register a schema: it breaks the subject's compatibility level."""


@dataclass(frozen=True, slots=True)
class CompatibilityVerdict:
    """What the registry's compatibility endpoint said about a candidate schema."""

    compatible: bool
    messages: tuple[str, ...] = ()


class ConfluentRegistry:
    """A cached client for the Confluent Schema Registry REST API.

    ``url`` is the API's base, e.g. ``http://127.0.0.1:8081/apis/ccompat/v7`` for Apicurio or
    ``https://user:secret@registry.example:8081`` for Confluent (credentials in the URL become
    HTTP basic auth and are never logged). ``timeout`` bounds each request in seconds.
    ``latest_ttl`` is how long ``latest`` trusts its cache before refreshing in the background;
    ``missing_ttl`` how long an unknown schema id is remembered as unknown.
    """

    __slots__ = (
        "_by_id",
        "_by_version",
        "_client",
        "_conf",
        "_latest",
        "_latest_ttl",
        "_lock",
        "_missing_ids",
        "_missing_ttl",
        "_refresher",
        "_refreshing",
        "_url",
    )

    def __init__(
        self, url: str, *, timeout: float = 5.0, latest_ttl: float = 30.0, missing_ttl: float = 10.0
    ) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"schema registry URL must be http(s)://host[:port][/path], got {_redact(url)!r}")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
        self._url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        # The client gets the URL without credentials, and the credentials as its basic auth.
        self._conf: dict[str, Any] = {"url": self._url, "timeout": timeout, "max.retries": 0}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            self._conf["basic.auth.user.info"] = f"{user}:{urllib.parse.unquote(parts.password or '')}"
        self._client: SchemaRegistryClient | None = SchemaRegistryClient(dict(self._conf))
        self._latest_ttl = latest_ttl
        self._missing_ttl = missing_ttl
        self._by_id: dict[int, RegisteredSchema] = {}
        self._by_version: dict[tuple[str, int], RegisteredSchema] = {}
        self._latest: dict[str, tuple[RegisteredSchema, float]] = {}
        self._missing_ids: dict[int, float] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()
        self._refresher: ThreadPoolExecutor | None = None

    @property
    def url(self) -> str:
        """The base URL, without credentials."""
        return self._url

    def __repr__(self) -> str:
        return f"ConfluentRegistry({self._url!r})"

    # ------------------------------------------------------------- SchemaRegistry ---

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema with this id; fetched once, then cached for good."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        missing_until = self._missing_ids.get(schema_id)
        if missing_until is not None and time.monotonic() < missing_until:
            raise UnknownSchemaError(f"schema id {schema_id} is not registered in {self._url}")
        try:
            found = self._call("GET", f"/schemas/ids/{schema_id}", lambda c: c.get_schema(schema_id))
        except UnknownSchemaError:
            self._missing_ids[schema_id] = time.monotonic() + self._missing_ttl
            raise UnknownSchemaError(f"schema id {schema_id} is not registered in {self._url}") from None
        subject, version = self._first_subject_version(schema_id)
        schema = _registered(found, subject=subject, version=version, schema_id=schema_id)
        self._by_id[schema_id] = schema
        return schema

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version of ``subject``; cached, refreshed in the background after ``latest_ttl``."""
        entry = self._latest.get(subject)
        if entry is None:
            return self._fetch_latest(subject)
        schema, fresh_until = entry
        if time.monotonic() >= fresh_until:
            self._refresh_in_background(subject)
        return schema

    # ---------------------------------------------------------------- the rest ---

    def version(self, subject: str, version: int) -> RegisteredSchema:
        """One version of a subject (versions do not change; cached for good)."""
        cached = self._by_version.get((subject, version))
        if cached is not None:
            return cached
        number = int(version)
        return self._remember(self._call("GET", f"/subjects/{_quote(subject)}/versions/{number}",
                                         lambda c: c.get_version(subject, number)))

    def versions(self, subject: str) -> list[int]:
        """The version numbers of a subject, oldest first."""
        found = self._call("GET", f"/subjects/{_quote(subject)}/versions", lambda c: c.get_versions(subject))
        return sorted(int(v) for v in found)

    def subjects(self) -> list[str]:
        return sorted(str(s) for s in self._call("GET", "/subjects", lambda c: c.get_subjects()))

    def register(self, subject: str, definition: Any) -> int:
        """Register a schema under ``subject`` (a JSON string or the parsed JSON); return its id.

        Registering a schema the subject already has returns the existing id. Raises
        ``IncompatibleSchemaError`` when the subject's compatibility level forbids it.
        """
        schema = _avro(definition)
        schema_id = int(self._call("POST", f"/subjects/{_quote(subject)}/versions",
                                   lambda c: c.register_schema(subject, schema)))
        self._latest.pop(subject, None)  # the next latest() sees it
        self._missing_ids.pop(schema_id, None)
        return schema_id

    def lookup(self, subject: str, definition: Any) -> RegisteredSchema | None:
        """The registered version of ``subject`` that is this schema, or None if it has none."""
        schema = _avro(definition)
        try:
            found = self._call("POST", f"/subjects/{_quote(subject)}", lambda c: c.lookup_schema(subject, schema))
        except UnknownSchemaError:
            return None
        return self._remember(found)

    def check_compatibility(self, subject: str, definition: Any, version: str | int = "latest") -> CompatibilityVerdict:
        """Ask the registry whether ``definition`` may follow ``version`` of ``subject``.

        The registry applies the subject's own compatibility level (transitive levels check
        against every version). A subject the registry does not have accepts anything.
        """
        schema = _avro(definition)
        path = f"/compatibility/subjects/{_quote(subject)}/versions/{_quote(str(version))}"

        def ask(client: SchemaRegistryClient) -> tuple[bool, list[Any]]:
            # The client's test_compatibility() answers only yes or no; the registry's reasons
            # (verbose=true) come from the same request made through the client's REST layer.
            rest = getattr(client, "_rest_client", None)
            if rest is None:
                return bool(client.test_compatibility(subject, schema, version, verbose=True)), []
            body = rest.post(f"{path.lstrip('/')}?verbose=true", body=schema.to_dict())
            return bool(body.get("is_compatible")), list(body.get("messages") or [])

        try:
            compatible, messages = self._call("POST", path, ask)
        except UnknownSchemaError:
            return CompatibilityVerdict(True, ("the registry has no such subject or version yet",))
        return CompatibilityVerdict(compatible, tuple(str(m) for m in messages))

    def compatibility(self, subject: str | None = None) -> str:
        """The compatibility level in force for ``subject`` (its own, else the registry's default)."""
        if subject is not None:
            try:
                return _level(self._call("GET", f"/config/{_quote(subject)}", lambda c: c.get_config(subject)))
            except UnknownSchemaError:
                pass
            except SchemaRegistryError as exc:
                if exc.error_code != 40408:  # subject has no level of its own
                    raise
        return _level(self._call("GET", "/config", lambda c: c.get_config()))

    def set_compatibility(self, subject: str, level: str) -> None:
        """Give ``subject`` its own compatibility level (BACKWARD, FULL_TRANSITIVE, NONE, ...)."""
        self._call("PUT", f"/config/{_quote(subject)}", lambda c: c.set_compatibility(subject, level))

    def delete_subject(self, subject: str) -> list[int]:
        """Soft-delete every version of a subject; return the deleted version numbers."""
        deleted = self._call("DELETE", f"/subjects/{_quote(subject)}", lambda c: c.delete_subject(subject))
        self._latest.pop(subject, None)
        # the client remembers what it registered and looked up; after a delete, registering
        # the same schema again must reach the registry
        self._session().clear_caches()  # type: ignore[no-untyped-call]  # confluent-kafka 2.16 leaves it unannotated
        return [int(v) for v in deleted]

    async def warm(self, subjects: Iterable[str]) -> None:
        """Load the latest schema of each subject, in a worker thread."""
        for subject in subjects:
            await asyncio.to_thread(self._fetch_latest, subject)

    async def prefetch(self, schema_ids: Iterable[int]) -> None:
        """Fetch, in a worker thread, the ids not cached yet; unknown ids are left for decode to report."""
        missing = [i for i in dict.fromkeys(schema_ids) if i not in self._by_id]
        for schema_id in missing:
            # a failure is left for decode to raise again, for that record alone
            with contextlib.suppress(UnknownSchemaError, RegistryUnavailableError, SchemaRegistryError):
                await asyncio.to_thread(self.by_id, schema_id)

    def close(self) -> None:
        """Stop the background refresher and close the HTTP connections.

        Cached schemas stay usable; a later lookup that needs the registry connects again.
        """
        with self._lock:
            refresher, self._refresher = self._refresher, None
            client, self._client = self._client, None
        if refresher is not None:
            refresher.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()

    # ---------------------------------------------------------------- internals ---

    def _call(self, method: str, path: str, request: Callable[[SchemaRegistryClient], _T]) -> _T:
        """Make one request with the client; its failures as this module's errors.

        ``method`` and ``path`` only name the request in error messages.
        """
        where = f"{method} {self._url}{path}"
        try:
            return request(self._session())
        except _ClientError as exc:
            raise _error_for(exc, where) from None
        except _REQUEST_ERRORS as exc:
            raise RegistryUnavailableError(
                f"schema registry did not answer {where}: {exc or type(exc).__name__}") from None
        except json.JSONDecodeError as exc:
            raise RegistryUnavailableError(f"schema registry answered {where} with malformed JSON: {exc}") from None

    def _session(self) -> SchemaRegistryClient:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = SchemaRegistryClient(dict(self._conf))
                client = self._client
        return client

    def _fetch_latest(self, subject: str) -> RegisteredSchema:
        # get_version(..., "latest") always asks the registry (the client's own latest cache
        # never expires unless told to); this class decides when to ask
        schema = self._remember(self._call("GET", f"/subjects/{_quote(subject)}/versions/latest",
                                           lambda c: c.get_version(subject, "latest")))
        self._latest[subject] = (schema, time.monotonic() + self._latest_ttl)
        return schema

    def _refresh_in_background(self, subject: str) -> None:
        with self._lock:
            if subject in self._refreshing:
                return
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schema-registry")
            self._refreshing.add(subject)
            refresher = self._refresher
        refresher.submit(self._refresh, subject)

    def _refresh(self, subject: str) -> None:
        try:
            self._fetch_latest(subject)
        except Exception as exc:  # noqa: BLE001 - keep serving the last known schema
            entry = self._latest.get(subject)
            if entry is not None:  # try again after a short pause, not on every record
                self._latest[subject] = (entry[0], time.monotonic() + min(self._latest_ttl, 5.0))
            log.warning("could not refresh the latest schema of %s from %s: %s", subject, self._url, exc)
        finally:
            with self._lock:
                self._refreshing.discard(subject)

    def _first_subject_version(self, schema_id: int) -> tuple[str, int]:
        """Where an id is registered (for error messages); ("?", 0) if the registry cannot say."""
        try:
            found = self._call("GET", f"/schemas/ids/{schema_id}/versions",
                               lambda c: c.get_schema_versions(schema_id))
        except (UnknownSchemaError, SchemaRegistryError):
            return "?", 0
        if found and found[0].subject is not None:
            return str(found[0].subject), int(found[0].version or 0)
        return "?", 0

    def _remember(self, found: Any) -> RegisteredSchema:
        """Cache a subject-version answer (it carries subject, version, id and schema)."""
        schema_id = int(found.schema_id)
        known = self._by_id.get(schema_id)
        schema = _registered(found.schema, subject=str(found.subject), version=int(found.version),
                             schema_id=schema_id, parsed=known.parsed if known is not None else None)
        self._by_id.setdefault(schema_id, schema)
        self._by_version[(schema.subject, schema.version)] = schema
        return schema


def _error_for(exc: _ClientError, where: str) -> Exception:
    status = int(exc.http_status_code)
    code = exc.error_code if isinstance(exc.error_code, int) and exc.error_code != _ClientError.UNKNOWN else None
    message = exc.error_message if code is not None else None
    text = f"schema registry answered {where} with {status}" + (f": {message}" if message else "")
    if status == 404 and (code in _UNKNOWN_CODES or code is None):
        return UnknownSchemaError(text)
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return RegistryUnavailableError(text, status=status)
    if status == 409:
        return IncompatibleSchemaError(text, status=status, error_code=code)
    return SchemaRegistryError(text, status=status, error_code=code)


def _registered(found: Schema, *, subject: str, version: int, schema_id: int, parsed: Any = None) -> RegisteredSchema:
    """A registry answer as a RegisteredSchema; refuses what the Avro serde cannot use."""
    schema_type = found.schema_type or "AVRO"
    if schema_type != "AVRO":
        raise UnknownSchemaError(f"schema id {schema_id} is a {schema_type} schema, not Avro")
    if found.references:
        raise UnknownSchemaError(f"schema id {schema_id} uses schema references, which this client does not resolve")
    definition = json.loads(found.schema_str or "null")
    if parsed is None:
        parsed = fastavro.parse_schema(definition, named_schemas={})
    return RegisteredSchema(subject, version, schema_id, parsed, definition)


def _avro(definition: Any) -> Schema:
    return Schema(definition if isinstance(definition, str) else json.dumps(definition), "AVRO")


def _level(config: Any) -> str:
    level = getattr(config, "compatibility_level", None) or getattr(config, "compatibility", None)
    return str(getattr(level, "value", level) or "BACKWARD")


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@")
