"""An external HTTP API as a pipeline step sees it: ``Api``, its policies, and its errors.

    customers = Api("customers", base_url="http://127.0.0.1:8080", rate_limit=200, cache=Cache(ttl=60))

    @pipeline.step(customers)
    async def customer(event):
        return await customers.get("/v1/customers/{id}", id=event["customer_id"])

An ``Api`` is a definition: a name, defaults for its policies, no connection. The worker binds
it when the pipeline starts (``bind``), with the values of ``STREAMS_API_<NAME>_*`` variables
over the defaults given in code (``ApiSettings.from_environment``), and builds it on the
connector library: one pooled HTTP session with timeouts and in-call retries, a circuit
breaker, a rate limit held for the whole consumer group, a single-flight cache that honours
``Cache-Control``, OAuth2 client credentials, an API key and mTLS. Errors come out as
``Permanent`` or ``Transient`` (``Transient`` includes ``CircuitOpen``), the classification of
``streams.failures``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Coroutine, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dotenv import dotenv_values
from pydantic import SecretStr

from connectors.auth import ApiKeyAuth, ApiKeySettings, Auth, OAuth2ClientCredentials, OAuth2Settings, TlsSettings
from connectors.context import current_event_id
from connectors.errors import CircuitOpenError, ConnectorError, PermanentError, TransientError
from connectors.http import HttpConnector, HttpSettings, JsonResponse
from connectors.resilience.breaker import BreakerSettings, CircuitBreaker
from connectors.resilience.cache import CacheSettings, ResponseCache, freshness_of
from connectors.resilience.limiter import RateLimit, RateLimitSettings
from connectors.results import Source
from streams.secret_files import read_secret_file
from streams.telemetry.redaction import register_secret


class Permanent(PermanentError):
    """The event can never succeed as it is (a 404, a value the API refuses): DLQ at once.

    Raise it from a step or an output builder; an ``Api`` raises it for 4xx answers other than
    408 and 429, and for answers it cannot use.
    """

    def __init__(self, message: str, *, status: int | None = None, api: str | None = None) -> None:
        super().__init__(message, connector=api or "pipeline", status=status)


class Transient(TransientError):
    """The event may succeed later (an outage, a timeout, a 5xx, 429, 408): in-call retries,
    then the retry tiers, then the DLQ."""

    def __init__(self, message: str, *, status: int | None = None, api: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, connector=api or "pipeline", status=status, retry_after=retry_after)


class CircuitOpen(Transient, CircuitOpenError):
    """The API's circuit breaker is open; no call was made. A required step's event waits (the
    worker pauses consumption until the breaker's probes close it); an optional step falls back."""

    def __init__(self, error: CircuitOpenError) -> None:
        ConnectorError.__init__(self, str(error), connector=error.connector, status=None)
        self.retry_after = error.retry_after
        self.breaker = error.breaker


def _translated(exc: ConnectorError) -> ConnectorError:
    """The public class for a connector error (the original stays as its cause)."""
    if isinstance(exc, Permanent | Transient):
        return exc
    if isinstance(exc, CircuitOpenError):
        return CircuitOpen(exc)
    if isinstance(exc, TransientError):
        return Transient(str(exc), status=exc.status, api=exc.connector, retry_after=exc.retry_after)
    return Permanent(str(exc), status=exc.status, api=exc.connector)


@dataclass(frozen=True, slots=True)
class Cache:
    """Answers of GET calls kept by URL.

    ttl: seconds an answer is fresh when it carries no ``Cache-Control: max-age``.
    max_entries: LRU cap. stale_if_error: seconds past expiry an answer stands in while the API
    fails (the output is then marked degraded).
    """

    ttl: float = 60.0
    max_entries: int = 10_000
    stale_if_error: float = 600.0
    max_ttl: float = 3600.0


@dataclass(frozen=True, slots=True)
class Breaker:
    """When the API's circuit opens (failure or slow-call rate over the last ``window`` calls)
    and how long it stays open before probing."""

    failure_rate: float = 0.5
    slow_call_rate: float = 1.0
    slow_call_seconds: float = 2.0
    window: int = 100
    minimum_calls: int = 20
    open_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class OAuth2:
    """OAuth2 client credentials. The secret comes from ``STREAMS_API_<NAME>_CLIENT_SECRET`` or
    the file named by ``..._CLIENT_SECRET_FILE``, never from code; ``token_url`` defaults to
    ``<base_url>/oauth/token``."""

    client_id: str | None = None
    token_url: str | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key in a header; the key comes from ``STREAMS_API_<NAME>_API_KEY`` (or ``_FILE``)."""

    header: str = "X-API-Key"


@dataclass(frozen=True, slots=True)
class Tls:
    """CAs to trust and the client certificate for mTLS (file paths)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """An API's resolved settings: the code's defaults with the environment's overrides."""

    name: str
    base_url: str | None
    rate_limit: float | None
    timeout: float
    retries: int
    max_connections: int
    cache: Cache | None
    breaker: Breaker
    auth: OAuth2 | ApiKey | None
    tls: Tls | None
    probe: str | None
    client_secret: SecretStr | None = field(default=None, repr=False)
    api_key: SecretStr | None = field(default=None, repr=False)
    key_password: SecretStr | None = field(default=None, repr=False)

    @staticmethod
    def variable(api: str, setting: str) -> str:
        """``STREAMS_API_<NAME>_<SETTING>``: the API name upper-cased, other characters as ``_``."""
        return f"STREAMS_API_{re.sub(r'[^A-Z0-9]', '_', api.upper())}_{setting}"

    @classmethod
    def from_environment(cls, api: Api, environ: Mapping[str, str | None] | None = None, *,
                         default_timeout: float = 5.0, default_retries: int = 3) -> ApiSettings:
        """``STREAMS_API_<NAME>_*`` over the code's values over the worker-wide defaults
        (``STREAMS_HTTP_TIMEOUT`` and ``STREAMS_HTTP_MAX_ATTEMPTS`` in a worker)."""
        env = {**dotenv_values(".env"), **os.environ} if environ is None else environ

        def text(setting: str) -> str | None:
            value = env.get(cls.variable(api.name, setting))
            return value if value else None

        def number(setting: str, default: float | None, *, positive: bool = True) -> float | None:
            raw = text(setting)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{cls.variable(api.name, setting)} must be a number") from None
            if positive and value <= 0:
                raise ValueError(f"{cls.variable(api.name, setting)} must be greater than 0")
            return value

        def secret(setting: str) -> SecretStr | None:
            value = text(setting)
            path = text(f"{setting}_FILE")
            if value is not None and path is not None:
                raise ValueError(f"set {cls.variable(api.name, setting)} or its _FILE variable, not both")
            if path is not None:
                value = read_secret_file(path, cls.variable(api.name, f"{setting}_FILE"))
            if value is None:
                return None
            register_secret(value)  # redacted from logs and spans from now on
            return SecretStr(value)

        auth = api.auth
        client_id = text("CLIENT_ID")
        if client_id is not None or text("TOKEN_URL") is not None or text("SCOPE") is not None:
            base = auth if isinstance(auth, OAuth2) else OAuth2()
            auth = replace(base, client_id=client_id or base.client_id, token_url=text("TOKEN_URL") or base.token_url,
                           scope=text("SCOPE") or base.scope)
        elif text("API_KEY") is not None or text("API_KEY_FILE") is not None:
            auth = auth if isinstance(auth, ApiKey) else ApiKey(header=text("API_KEY_HEADER") or "X-API-Key")
        tls = api.tls
        if any(text(s) for s in ("CA_FILE", "CERT_FILE", "KEY_FILE")):
            base_tls = tls or Tls()
            tls = Tls(ca_file=text("CA_FILE") or base_tls.ca_file, cert_file=text("CERT_FILE") or base_tls.cert_file,
                      key_file=text("KEY_FILE") or base_tls.key_file)
        timeout = number("TIMEOUT", api.timeout if api.timeout is not None else default_timeout)
        retries = number("RETRIES", api.retries if api.retries is not None else default_retries)
        settings = cls(
            name=api.name,
            base_url=text("URL") or api.base_url,
            rate_limit=number("RATE_LIMIT", api.rate_limit),
            timeout=timeout or default_timeout,
            retries=int(retries or default_retries),
            max_connections=int(number("MAX_CONNECTIONS", api.max_connections) or api.max_connections),
            cache=api.cache,
            breaker=api.breaker or Breaker(),
            auth=auth,
            tls=tls,
            probe=text("PROBE") or api.probe,
            client_secret=secret("CLIENT_SECRET"),
            api_key=secret("API_KEY"),
            key_password=secret("KEY_PASSWORD"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse what cannot work, naming the variable that would fix it."""
        if not self.base_url:
            raise ValueError(f"API {self.name!r} has no URL: set {self.variable(self.name, 'URL')} "
                             f"(or base_url= in the pipeline's code)")
        if not re.match(r"^https?://[^/\s]+", self.base_url):
            raise ValueError(f"{self.variable(self.name, 'URL')} must be an http(s):// URL")
        if isinstance(self.auth, OAuth2):
            if not self.auth.client_id:
                raise ValueError(f"API {self.name!r} uses OAuth2: set {self.variable(self.name, 'CLIENT_ID')}")
            if self.client_secret is None:
                raise ValueError(f"API {self.name!r} uses OAuth2: set {self.variable(self.name, 'CLIENT_SECRET')} "
                                 f"or {self.variable(self.name, 'CLIENT_SECRET_FILE')}")
        if isinstance(self.auth, ApiKey) and self.api_key is None:
            raise ValueError(f"API {self.name!r} uses an API key: set {self.variable(self.name, 'API_KEY')} "
                             f"or {self.variable(self.name, 'API_KEY_FILE')}")
        if self.retries < 1:
            raise ValueError(f"{self.variable(self.name, 'RETRIES')} must be at least 1")
        if self.tls is not None and self.tls.key_file and not self.tls.cert_file:
            raise ValueError(f"{self.variable(self.name, 'KEY_FILE')} is set without "
                             f"{self.variable(self.name, 'CERT_FILE')}")


class FakeApi(Protocol):
    """What ``Pipeline.run_one(apis=...)`` accepts in place of an API: anything with these methods."""

    async def get(self, path: str, *, query: Mapping[str, str] | None = None, **params: Any) -> Any: ...

    async def post(self, path: str, json: Any = None, **params: Any) -> Any: ...


# The fakes of the current run_one call, by API name (None in a worker).
fakes: ContextVar[Mapping[str, FakeApi] | None] = ContextVar("streams_fake_apis", default=None)
# Why the current event's output is degraded: stale answers served by an Api cache land here.
degradations: ContextVar[list[str] | None] = ContextVar("streams_degradations", default=None)
# The event ids of the batch being sent (a batch step), for its Idempotency-Key.
batch_event_ids: ContextVar[tuple[str, ...] | None] = ContextVar("streams_batch_event_ids", default=None)

AUTO = "auto"  # idempotency_key default: derived from the event (or the batch's events)


class Api:
    """An external HTTP API with its policies; see the module docstring.

    name: names the API in metrics, logs, error headers and ``STREAMS_API_<NAME>_*`` variables.
    base_url: scheme, host, port (and a path prefix); ``STREAMS_API_<NAME>_URL`` overrides it.
    auth: ``OAuth2(...)``, ``ApiKey(...)`` or None (secrets come from the environment only).
    rate_limit: requests/s for the whole consumer group (each worker takes its share; 429s
        shrink it, ``Retry-After`` holds it back). timeout: seconds per attempt; retries: attempts
        per call, the first included (None: the worker's ``STREAMS_HTTP_TIMEOUT`` and
        ``STREAMS_HTTP_MAX_ATTEMPTS``). cache: ``Cache(...)`` for GET answers, or None.
    breaker: ``Breaker(...)`` thresholds (defaults apply when None). tls: ``Tls(...)``.
    probe: the path the breaker GETs to learn the API is back (any answer but a 5xx, 408 or
        timeout counts); default: the last GET path the API was called with, else ``/``.
    """

    def __init__(
        self,
        name: str,
        base_url: str | None = None,
        *,
        auth: OAuth2 | ApiKey | None = None,
        rate_limit: float | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        cache: Cache | None = None,
        breaker: Breaker | None = None,
        tls: Tls | None = None,
        probe: str | None = None,
        max_connections: int = 256,
    ) -> None:
        if not re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$", name):
            raise ValueError(f"API name {name!r} must start with a letter and hold only letters, digits, _ and -")
        self.name = name
        self.base_url = base_url
        self.auth = auth
        self.rate_limit = rate_limit
        self.timeout = timeout
        self.retries = retries
        self.cache = cache
        self.breaker = breaker
        self.tls = tls
        self.probe = probe
        self.max_connections = max_connections
        self._bound: _BoundApi | None = None

    def __repr__(self) -> str:
        return f"Api({self.name!r}, base_url={self.base_url!r})"

    # -- calls -----------------------------------------------------------------------------

    async def get(self, path: str, *, query: Mapping[str, str] | None = None, **params: Any) -> Any:
        """GET ``path`` (``{name}`` placeholders filled from ``params``, percent-encoded) and
        return the decoded JSON answer; through the cache when the API has one."""
        fake = _fake(self.name)
        if fake is not None:
            return await fake.get(path, query=query, **params)
        return await self._client().get(path, query, params)

    async def post(self, path: str, json: Any = None, *, query: Mapping[str, str] | None = None,
                   idempotency_key: str | None = AUTO, **params: Any) -> Any:
        """POST a JSON body and return the JSON answer.

        ``idempotency_key``: by default derived from the event being processed
        (``<event-id>:<api>:<path>``) or, in a batch step, from the batch's events
        (``batch-<digest of the sorted event ids>:<api>:<path>``), the same on every retry and
        replay, so an API that honours ``Idempotency-Key`` applies the effect once; None sends
        none (and the call is then not retried in-call). A batch's key only matches a batch of
        the same events: for an API that takes a key per item, give each item its event's key
        from ``item_keys``.
        """
        fake = _fake(self.name)
        if fake is not None:
            return await fake.post(path, json, query=query, **params)
        key = _idempotency_key(self.name, path) if idempotency_key == AUTO else idempotency_key
        return await self._client().post(path, json, query, key, params)

    def item_keys(self, path: str) -> list[str]:
        """One idempotency key per event, for the items of a batch call's body.

        In a batch step: the key of each event of the batch, in the order of the step's lists,
        ``<event-id>:<api>:<path>`` (the key ``post`` would send for that event alone). An API
        that applies each item's effect once per item key then does so whatever batch the
        event is retried or replayed in, which a key for the whole batch cannot:

            @pipeline.step(risk_api, batch=Batch(max_size=50))
            async def risk(order):
                keys = risk_api.item_keys("/v1/risk-scores/batch")
                items = [{"idempotency_key": k, **o} for k, o in zip(keys, order, strict=True)]
                return (await risk_api.post("/v1/risk-scores/batch", {"items": items}))["results"]

        In a step of one event: a list of that event's key. RuntimeError outside a step (no
        event to derive a key from).
        """
        event_id = current_event_id.get()
        ids = (event_id,) if event_id is not None else batch_event_ids.get()
        if not ids or not all(ids):
            raise RuntimeError(f"API {self.name!r}: item_keys() is for a pipeline step: "
                               f"there is no event being processed to derive keys from")
        return [_event_key(event, self.name, path) for event in ids]

    # -- lifecycle (the worker's) ------------------------------------------------------------

    def bind(self, settings: ApiSettings | None = None) -> HttpConnector:
        """Build the client from ``settings`` (default: the environment over the code's values)."""
        self._bound = _BoundApi(settings or ApiSettings.from_environment(self))  # before start: no session yet
        return self._bound.http

    async def start(self) -> None:
        if self._bound is None:
            self.bind()
        assert self._bound is not None
        await self._bound.http.start()

    async def close(self) -> None:
        bound, self._bound = self._bound, None
        if bound is not None:
            await bound.http.close()

    @property
    def connector(self) -> HttpConnector | None:
        """The bound HTTP client (breaker, limiter, call observers), None before ``bind``."""
        return self._bound.http if self._bound is not None else None

    @property
    def response_cache(self) -> ResponseCache[str, Any] | None:
        return self._bound.cache if self._bound is not None else None

    def _client(self) -> _BoundApi:
        if self._bound is None:
            raise RuntimeError(f"API {self.name!r} is not started: it is started with its pipeline "
                               f"(or pass a fake to run_one(apis={{{self.name!r}: ...}}))")
        return self._bound


class _BoundApi:
    """An ``Api`` with its connections: the HTTP core, breaker, limiter and cache."""

    __slots__ = ("cache", "cache_settings", "http", "last_get", "name")

    def __init__(self, settings: ApiSettings) -> None:
        assert settings.base_url is not None  # ApiSettings.check
        self.name = settings.name
        b = settings.breaker
        breaker = CircuitBreaker(settings.name, BreakerSettings(
            window_size=b.window, minimum_calls=b.minimum_calls, failure_rate_threshold=b.failure_rate,
            slow_call_rate_threshold=b.slow_call_rate, slow_call_duration=b.slow_call_seconds,
            open_duration=b.open_seconds))
        limiter = RateLimit(settings.name, RateLimitSettings(rate=settings.rate_limit)) if settings.rate_limit else None
        http_settings = HttpSettings(
            base_url=settings.base_url, read_timeout=settings.timeout, total_timeout=settings.timeout,
            max_connections=settings.max_connections, max_attempts=settings.retries,
            tls=_tls(settings))
        self.http = HttpConnector(settings.name, http_settings, auth=_auth(settings), breaker=breaker, limiter=limiter)
        self.cache_settings = (CacheSettings(max_entries=settings.cache.max_entries, default_ttl=settings.cache.ttl,
                                             max_ttl=settings.cache.max_ttl,
                                             stale_if_error=settings.cache.stale_if_error)
                               if settings.cache is not None else None)
        self.cache: ResponseCache[str, Any] | None = (
            ResponseCache(settings.name, self.cache_settings) if self.cache_settings is not None else None)
        self.last_get: tuple[str, dict[str, str]] | None = None
        probe = settings.probe
        if probe is not None:
            breaker.set_probe(lambda: self.http.probe(probe))
        else:
            breaker.set_probe(self._probe_last_get)

    async def _probe_last_get(self) -> object:
        path, params = self.last_get or ("/", {})
        return await self.http.probe(path, **params)

    async def get(self, path: str, query: Mapping[str, str] | None, params: Mapping[str, Any]) -> Any:
        text_params = {k: str(v) for k, v in params.items()}
        self.last_get = (path, text_params)
        try:
            if self.cache is None:
                return (await self._get(path, query, text_params)).data
            url = self.http.url_for(path, **text_params)
            key = url if not query else url + "?" + "&".join(f"{k}={v}" for k, v in sorted(query.items()))
            result = await self.cache.get_or_load(key, lambda: self._load(path, query, text_params))
        except ConnectorError as exc:
            raise _translated(exc) from exc
        if result.source is Source.STALE:
            reasons = degradations.get()
            if reasons is not None:
                reasons.append(f"{self.name}: stale answer ({result.reason})")
        return result.value

    async def _load(self, path: str, query: Mapping[str, str] | None, params: dict[str, str]) -> tuple[Any, Any]:
        assert self.cache_settings is not None
        response = await self._get(path, query, params)
        return response.data, freshness_of(response.headers, self.cache_settings)

    def _get(self, path: str, query: Mapping[str, str] | None,
             params: dict[str, str]) -> Coroutine[Any, Any, JsonResponse]:
        # The placeholders as a mapping: one named like a keyword of HttpConnector.get (headers)
        # fills the path, not the keyword. The connector's coroutine itself: one frame less per await.
        return self.http.request_path("GET", path, params, query=query)

    async def post(self, path: str, body: Any, query: Mapping[str, str] | None, key: str | None,
                   params: Mapping[str, Any]) -> Any:
        text_params = {k: str(v) for k, v in params.items()}
        try:
            # HttpConnector.post_json(path, body, idempotency_key=key, **params) when there is no
            # query; as in _get, placeholders (even one named headers or retry) only fill the path
            headers = {"Idempotency-Key": key} if key is not None else None
            return (await self.http.request_path("POST", path, text_params, query=query or None, json_body=body,
                                                 headers=headers, retry=key is not None)).data
        except ConnectorError as exc:
            raise _translated(exc) from exc


def _fake(name: str) -> FakeApi | None:
    current = fakes.get()
    return None if current is None else current.get(name)


def _event_key(event_id: str, api: str, path: str) -> str:
    return f"{event_id}:{api}:{path}"


def _idempotency_key(api: str, path: str) -> str | None:
    event_id = current_event_id.get()
    if event_id is not None:
        return _event_key(event_id, api, path)
    ids = batch_event_ids.get()
    if ids and all(ids):
        digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:32]
        return f"batch-{digest}:{api}:{path}"
    return None


def _tls(settings: ApiSettings) -> TlsSettings | None:
    if settings.tls is None:
        return None
    return TlsSettings(ca_file=settings.tls.ca_file, cert_file=settings.tls.cert_file,
                       key_file=settings.tls.key_file, key_password=settings.key_password)


def _auth(settings: ApiSettings) -> Auth | None:
    if isinstance(settings.auth, OAuth2):
        assert settings.auth.client_id is not None and settings.client_secret is not None  # ApiSettings.check
        assert settings.base_url is not None
        token_url = settings.auth.token_url or settings.base_url.rstrip("/") + "/oauth/token"
        return OAuth2ClientCredentials(OAuth2Settings(token_url, settings.auth.client_id, settings.client_secret,
                                                      scope=settings.auth.scope), connector=settings.name)
    if isinstance(settings.auth, ApiKey):
        assert settings.api_key is not None
        return ApiKeyAuth(ApiKeySettings(settings.api_key, header=settings.auth.header))
    return None
