"""A client for any Confluent-compatible Schema Registry (Confluent, Apicurio's ccompat API, ...).

    registry = ConfluentRegistry("http://127.0.0.1:8081/apis/ccompat/v7")
    schema_id = registry.register("dev.streams.orders.OrderPlaced", definition)
    serde = AvroSerde(registry)          # by_id() and latest(), as EmbeddedRegistry

Lookups are synchronous, because the serde is: ``AvroSerde.decode``/``encode`` run once per record
on the worker's event loop. They stay off the network in steady state:

- ``by_id``: a schema id never changes meaning, so an id fetched once is cached for the life of
  the process. Only the first record with a new id waits for the registry (one round trip
  on loopback is about a millisecond). Ids the registry does not know are remembered for
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
The HTTP is the standard library's ``urllib``: a handful of requests per process needs no
connection pool and no new dependency.

Errors: an unknown id, subject or version raises ``UnknownSchemaError`` (the record is poison);
a registry that does not answer, or answers 5xx/408/429, raises ``RegistryUnavailableError``,
a ``TransientError``, so the event is retried rather than dead-lettered as poison.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fastavro

from connectors.errors import TransientError
from streams.serde.registry import RegisteredSchema, UnknownSchemaError

log = logging.getLogger("streams.serde.registry")

CONNECTOR_NAME = "schema-registry"
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_UNKNOWN_CODES = {40401, 40402, 40403}  # subject, version, schema not found
_TRANSIENT_STATUSES = {408, 429}


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
        "_auth",
        "_by_id",
        "_by_version",
        "_latest",
        "_latest_ttl",
        "_lock",
        "_missing_ids",
        "_missing_ttl",
        "_refresher",
        "_refreshing",
        "_timeout",
        "_url",
    )

    def __init__(
        self, url: str, *, timeout: float = 5.0, latest_ttl: float = 30.0, missing_ttl: float = 10.0
    ) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"schema registry URL must be http(s)://host[:port][/path], got {_redact(url)!r}")
        self._auth: str | None = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
        self._url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._timeout = timeout
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
            body = self._request("GET", f"/schemas/ids/{schema_id}")
        except UnknownSchemaError:
            self._missing_ids[schema_id] = time.monotonic() + self._missing_ttl
            raise UnknownSchemaError(f"schema id {schema_id} is not registered in {self._url}") from None
        subject, version = self._first_subject_version(schema_id)
        schema = _registered(body, subject=subject, version=version, schema_id=schema_id)
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
        return self._remember(self._request("GET", f"/subjects/{_quote(subject)}/versions/{int(version)}"))

    def versions(self, subject: str) -> list[int]:
        """The version numbers of a subject, oldest first."""
        body = self._request("GET", f"/subjects/{_quote(subject)}/versions")
        return sorted(int(v) for v in body)

    def subjects(self) -> list[str]:
        return sorted(str(s) for s in self._request("GET", "/subjects"))

    def register(self, subject: str, definition: Any) -> int:
        """Register a schema under ``subject`` (a JSON string or the parsed JSON); return its id.

        Registering a schema the subject already has returns the existing id. Raises
        ``IncompatibleSchemaError`` when the subject's compatibility level forbids it.
        """
        body = self._request("POST", f"/subjects/{_quote(subject)}/versions", {"schema": _schema_text(definition)})
        schema_id = int(body["id"])
        self._latest.pop(subject, None)  # the next latest() sees it
        self._missing_ids.pop(schema_id, None)
        return schema_id

    def lookup(self, subject: str, definition: Any) -> RegisteredSchema | None:
        """The registered version of ``subject`` that is this schema, or None if it has none."""
        try:
            body = self._request("POST", f"/subjects/{_quote(subject)}", {"schema": _schema_text(definition)})
        except UnknownSchemaError:
            return None
        return self._remember(body)

    def check_compatibility(self, subject: str, definition: Any, version: str | int = "latest") -> CompatibilityVerdict:
        """Ask the registry whether ``definition`` may follow ``version`` of ``subject``.

        The registry applies the subject's own compatibility level (transitive levels check
        against every version). A subject the registry does not have accepts anything.
        """
        path = f"/compatibility/subjects/{_quote(subject)}/versions/{_quote(str(version))}?verbose=true"
        try:
            body = self._request("POST", path, {"schema": _schema_text(definition)})
        except UnknownSchemaError:
            return CompatibilityVerdict(True, ("the registry has no such subject or version yet",))
        messages = body.get("messages") or []
        return CompatibilityVerdict(bool(body.get("is_compatible")), tuple(str(m) for m in messages))

    def compatibility(self, subject: str | None = None) -> str:
        """The compatibility level in force for ``subject`` (its own, else the registry's default)."""
        if subject is not None:
            try:
                return _level(self._request("GET", f"/config/{_quote(subject)}"))
            except UnknownSchemaError:
                pass
            except SchemaRegistryError as exc:
                if exc.error_code != 40408:  # subject has no level of its own
                    raise
        return _level(self._request("GET", "/config"))

    def set_compatibility(self, subject: str, level: str) -> None:
        """Give ``subject`` its own compatibility level (BACKWARD, FULL_TRANSITIVE, NONE, ...)."""
        self._request("PUT", f"/config/{_quote(subject)}", {"compatibility": level})

    def delete_subject(self, subject: str) -> list[int]:
        """Soft-delete every version of a subject; return the deleted version numbers."""
        body = self._request("DELETE", f"/subjects/{_quote(subject)}")
        self._latest.pop(subject, None)
        return [int(v) for v in body]

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
        """Stop the background refresher (cached schemas stay usable)."""
        with self._lock:
            refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- internals ---

    def _fetch_latest(self, subject: str) -> RegisteredSchema:
        schema = self._remember(self._request("GET", f"/subjects/{_quote(subject)}/versions/latest"))
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
            body = self._request("GET", f"/schemas/ids/{schema_id}/versions")
        except (UnknownSchemaError, SchemaRegistryError):
            return "?", 0
        if isinstance(body, list) and body and isinstance(body[0], dict):
            return str(body[0].get("subject", "?")), int(body[0].get("version", 0))
        return "?", 0

    def _remember(self, body: Any) -> RegisteredSchema:
        """Cache a subject-version answer (it carries subject, version, id and schema)."""
        schema_id = int(body["id"])
        known = self._by_id.get(schema_id)
        schema = _registered(body, subject=str(body["subject"]), version=int(body["version"]), schema_id=schema_id,
                             parsed=known.parsed if known is not None else None)
        self._by_id.setdefault(schema_id, schema)
        self._by_version[(schema.subject, schema.version)] = schema
        return schema

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Accept": f"{_CONTENT_TYPE}, application/json"}
        if data is not None:
            headers["Content-Type"] = _CONTENT_TYPE
        if self._auth is not None:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self._url + path, data=data, headers=headers, method=method)
        where = f"{method} {self._url}{path.split('?')[0]}"
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _error_for(exc, where) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailableError(f"schema registry did not answer {where}: {reason}") from None
        except json.JSONDecodeError as exc:
            raise RegistryUnavailableError(f"schema registry answered {where} with malformed JSON: {exc}") from None


def _error_for(exc: urllib.error.HTTPError, where: str) -> Exception:
    try:
        body = json.loads(exc.read() or b"{}")
    except (json.JSONDecodeError, OSError):
        body = {}
    code = body.get("error_code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = f"schema registry answered {where} with {exc.code}" + (f": {message}" if message else "")
    if exc.code == 404 and (code in _UNKNOWN_CODES or code is None):
        return UnknownSchemaError(text)
    if exc.code >= 500 or exc.code in _TRANSIENT_STATUSES:
        return RegistryUnavailableError(text, status=exc.code)
    if exc.code == 409:
        return IncompatibleSchemaError(text, status=exc.code, error_code=code)
    return SchemaRegistryError(text, status=exc.code, error_code=code)


def _registered(body: dict[str, Any], *, subject: str, version: int, schema_id: int,
                parsed: Any = None) -> RegisteredSchema:
    """A registry answer as a RegisteredSchema; refuses what the Avro serde cannot use."""
    schema_type = body.get("schemaType", "AVRO") or "AVRO"
    if schema_type != "AVRO":
        raise UnknownSchemaError(f"schema id {schema_id} is a {schema_type} schema, not Avro")
    if body.get("references"):
        raise UnknownSchemaError(f"schema id {schema_id} uses schema references, which this client does not resolve")
    definition = json.loads(body["schema"])
    if parsed is None:
        parsed = fastavro.parse_schema(definition, named_schemas={})
    return RegisteredSchema(subject, version, schema_id, parsed, definition)


def _schema_text(definition: Any) -> str:
    return definition if isinstance(definition, str) else json.dumps(definition)


def _level(body: Any) -> str:
    level = (body.get("compatibilityLevel") or body.get("compatibility")) if isinstance(body, dict) else None
    return str(level or "BACKWARD")


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@")
