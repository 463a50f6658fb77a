"""The HTTP core every connector uses: one aiohttp session, timeouts, typed errors, retries.

    async with HttpConnector("customers", HttpSettings(base_url="http://127.0.0.1:8080")) as http:
        body = await http.get_json("/v1/customers/{id}", id="C000042")
        score = await http.post_json("/v1/risk-scores", {"amount": 1}, idempotency_key=event_id)

Path parameters are percent-encoded (``/`` included), and every URL, templated or taken from a
response (a ``Link`` header), is checked against the allowed hosts, so a value can neither
change the path nor reach another host. Failures become ``TransientError`` or
``PermanentError`` (see ``streams.failures``).

One call is: up to ``max_attempts`` attempts within ``max_elapsed`` seconds, separated by
full-jitter backoff or by the server's ``Retry-After`` (obeyed up to a cap). Each attempt asks
the circuit breaker for leave (an open breaker fails the call at once with
``CircuitOpenError``), then waits for the rate limiter, then adds auth headers and sends. The
breaker comes first so that an open breaker costs neither rate budget nor waiting; cancelled
attempts give their breaker permit back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, NamedTuple, TypedDict, Unpack
from urllib.parse import quote, urlsplit

import aiohttp

from connectors.auth import Auth, TlsSettings
from connectors.errors import CircuitOpenError, ConnectorError, PermanentError, TransientError
from connectors.instrumentation import instrumentation
from connectors.resilience.backoff import RetryPolicy
from connectors.resilience.breaker import CircuitBreaker
from connectors.resilience.limiter import RateLimit

log = logging.getLogger("connectors.http")

_TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How one connector talks to its API.

    base_url: scheme, host and port of the API (a path prefix is kept).
    connect_timeout / read_timeout / total_timeout: seconds to connect, between two reads of
        the body, and for one whole attempt.
    max_connections: pool size; size it to the pipeline's concurrency (one per call in flight).
    max_connections_per_host: 0 means the pool's limit applies alone.
    keepalive_timeout: seconds an idle pooled connection is kept for reuse.
    max_response_bytes: a larger body is refused (PermanentError), never read whole.
    max_attempts: in-call attempts for transient failures, the first one included.
    max_elapsed: seconds one call may take, all attempts and waits together.
    backoff_base / backoff_cap: full-jitter backoff, attempt n sleeps U(0, min(cap, base*2**(n-1))).
    retry_after_cap: the longest ``Retry-After`` obeyed inside a call; beyond it, give up.
    allowed_hosts: more ``host`` or ``host:port`` values URLs may point at, besides the base URL's.
    tls: CA bundle and client certificate (mTLS); None uses the system's trust store.
    """

    base_url: str
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    total_timeout: float = 10.0
    max_connections: int = 100
    max_connections_per_host: int = 0
    keepalive_timeout: float = 30.0
    max_response_bytes: int = 1 << 20
    max_attempts: int = 3
    max_elapsed: float = 15.0
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    retry_after_cap: float = 2.0
    allowed_hosts: tuple[str, ...] = ()
    tls: TlsSettings | None = None

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            max_elapsed=self.max_elapsed,
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            retry_after_cap=self.retry_after_cap,
        )


class CallOutcome(NamedTuple):
    """One attempt, as call observers see it (for latency metrics by connector and status).

    status: the HTTP status, or ``timeout``, ``connection_error``, ``circuit_open`` or ``error``.
    route: the path template (``/v1/customers/{id}``), never the filled-in URL.
    An immutable record, made per attempt: a tuple costs a fraction of a frozen dataclass.
    """

    connector: str
    method: str
    route: str
    status: int | str
    seconds: float
    attempt: int


class RequestOptions(TypedDict, total=False):
    """The keyword options of ``HttpConnector.request``."""

    query: Mapping[str, str] | None
    json_body: Any
    headers: Mapping[str, str] | None
    retry: bool
    route: str | None


class JsonResponse(NamedTuple):
    """A successful answer: status, headers (aiohttp's, case-insensitive) and the decoded JSON body.
    An immutable record, made per call, as ``CallOutcome``."""

    status: int
    headers: Mapping[str, str]
    data: Any
    url: str


class HttpConnector:
    """An API client for one connector: pooled session, timeouts, retries, typed errors.

    auth, breaker and limiter are optional; connectors for the external APIs pass all three.
    """

    __slots__ = (
        "_allowed",
        "_base",
        "_call_observers",
        "_checked_templates",
        "_deprecation_observers",
        "_full_timeout",
        "_header_hooks",
        "_policy",
        "_scheme",
        "_session",
        "attempts",
        "auth",
        "breaker",
        "calls",
        "deprecated_responses",
        "limiter",
        "name",
        "retries",
        "settings",
    )

    def __init__(
        self,
        name: str,
        settings: HttpSettings,
        *,
        auth: Auth | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimit | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.auth = auth
        self.breaker = breaker
        self.limiter = limiter
        parts = urlsplit(settings.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"connector {name}: base URL {settings.base_url!r} must be http(s)://host[:port]")
        self._scheme = parts.scheme
        self._allowed = {(parts.hostname, _port(parts.scheme, parts.port))} | {
            _host_port(h, parts.scheme) for h in settings.allowed_hosts
        }
        self._base = settings.base_url.rstrip("/")
        self._checked_templates: set[str] = set()
        self._full_timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self._policy = settings.retry_policy
        self._session: aiohttp.ClientSession | None = None
        self._call_observers: list[Callable[[CallOutcome], None]] = []
        self._header_hooks: list[Callable[[dict[str, str]], None]] = []
        self._deprecation_observers: list[Callable[[str], None]] = []
        self.deprecated_responses: dict[str, int] = {}  # "<METHOD> <route>" → answers announcing deprecation
        #: calls, attempts and retries so far (for tests and metrics)
        self.calls = 0
        self.attempts = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"<HttpConnector {self.name} {self._base}>"

    async def __aenter__(self) -> HttpConnector:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._session is None:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=s.max_connections,
                    limit_per_host=s.max_connections_per_host,
                    keepalive_timeout=s.keepalive_timeout,
                    ssl=s.tls.ssl_context() if s.tls is not None else True,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=s.total_timeout, sock_connect=s.connect_timeout, sock_read=s.read_timeout
                ),
                headers={"Accept": "application/json", "User-Agent": f"streams-connector/{self.name}"},
                raise_for_status=False,
            )

    async def close(self) -> None:
        if self.breaker is not None:
            await self.breaker.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def add_call_observer(self, observer: Callable[[CallOutcome], None]) -> None:
        """Call ``observer`` after every attempt (and every call an open breaker refused)."""
        self._call_observers.append(observer)

    def add_header_hook(self, hook: Callable[[dict[str, str]], None]) -> None:
        """Let ``hook`` add headers to every attempt, e.g. ``traceparent`` of the current span."""
        self._header_hooks.append(hook)

    # -- URLs --------------------------------------------------------------------------------

    def url_for(self, path_template: str, **params: str) -> str:
        """Fill a path template with percent-encoded parameters; refuse other hosts."""
        encoded = {key: _path_segment(value) for key, value in params.items()}
        url = self._base + path_template.format(**encoded)
        if path_template in self._checked_templates:
            return url
        self.check_url(url)
        # A template that starts with "/" ends the base URL's authority where the base ends, and
        # every parameter is percent-encoded with nothing kept ("/", "?", "#", "@", "\\" too), so
        # no parameter can move the URL to another host: one check per template is enough.
        if path_template.startswith("/") and len(self._checked_templates) < 1000:
            self._checked_templates.add(path_template)
        return url

    def check_url(self, url: str) -> str:
        """Return ``url`` if it points at an allowed host with the base URL's scheme, else refuse it."""
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme, (parts.hostname, _port(parts.scheme, parts.port))
        except ValueError:  # an unparsable host or port
            scheme, host = "", (None, 0)
        if scheme != self._scheme or host not in self._allowed:
            raise PermanentError(
                f"URL host {host[0]!r} is not the allowed host of connector {self.name}", connector=self.name
            )
        return url

    # -- calls -------------------------------------------------------------------------------

    async def get_json(self, path_template: str, headers: dict[str, str] | None = None, **params: str) -> Any:
        """GET a JSON document, retrying transient failures with full-jitter backoff."""
        url = self.url_for(path_template, **params)
        return (await self._request("GET", url, headers=headers, route=path_template)).data

    async def get(
        self,
        path_template: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        **params: str,
    ) -> JsonResponse:
        """GET a JSON document and its headers (for Cache-Control, Link, ...)."""
        url = self.url_for(path_template, **params)
        return await self._request("GET", url, query=query, headers=headers, route=path_template)

    async def post_json(
        self,
        path_template: str,
        body: Any,
        *,
        idempotency_key: str | None = None,
        retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
        **params: str,
    ) -> Any:
        """POST a JSON body and return the JSON answer.

        ``idempotency_key`` goes out as the ``Idempotency-Key`` header, the same on every
        attempt, so the API can recognise a retry. A POST is retried in-call only when it has
        such a key, or when ``retry=True`` says the endpoint changes nothing (a computation).
        """
        return (
            await self.post(
                path_template, body, idempotency_key=idempotency_key, retry=retry, headers=headers, **params
            )
        ).data

    async def post(
        self,
        path_template: str,
        body: Any,
        *,
        idempotency_key: str | None = None,
        retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
        **params: str,
    ) -> JsonResponse:
        all_headers = dict(headers or {})
        if idempotency_key is not None:
            all_headers["Idempotency-Key"] = idempotency_key
        retryable = retry if retry is not None else idempotency_key is not None
        url = self.url_for(path_template, **params)
        return await self._request(
            "POST", url, json_body=body, headers=all_headers, retry=retryable, route=path_template
        )

    async def request(self, method: str, url: str, **options: Unpack[RequestOptions]) -> JsonResponse:
        """One call to an allowed absolute URL: attempts, backoff, breaker, limiter, auth.

        Options: ``query``, ``json_body``, ``headers``, ``retry`` (default True) and ``route``,
        which names the endpoint for observers (default: the URL's path).
        """
        self.check_url(url)
        return await self._request(method, url, **options)

    async def request_path(self, method: str, path_template: str, params: Mapping[str, str],
                           **options: Unpack[RequestOptions]) -> JsonResponse:
        """``request`` for ``url_for(path_template, **params)``: the URL is checked there (once per
        template), not again. ``params`` is a mapping, so a placeholder named like an option
        (``headers``, ``retry``) fills the path; ``route`` defaults to ``path_template``."""
        url = self.url_for(path_template, **params)
        if options.get("route") is None:
            options["route"] = path_template
        return await self._request(method, url, **options)

    async def _request(self, method: str, url: str, **options: Unpack[RequestOptions]) -> JsonResponse:
        """``request`` for a URL already checked (made by ``url_for``)."""
        query, json_body, headers = options.get("query"), options.get("json_body"), options.get("headers")
        retry = options.get("retry", True)
        route = options.get("route")
        route = route if route is not None else urlsplit(url).path
        self.calls += 1
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            remaining = self._policy.max_elapsed - (time.monotonic() - started)
            try:
                return await self._attempt(
                    method, url, query, json_body, headers, remaining, guarded=True, route=route, attempt=attempt
                )
            except CircuitOpenError:
                raise
            except TransientError as exc:
                delay = (
                    self._policy.delay(attempt, time.monotonic() - started, exc.retry_after) if retry else None
                )
                if delay is None:
                    raise
                self.retries += 1
                log.debug("%s: attempt %d failed (%s), retrying in %.3f s", self.name, attempt, exc, delay)
                await asyncio.sleep(delay)

    async def probe(self, path_template: str, **params: str) -> JsonResponse:
        """One GET attempt that bypasses the breaker: what a breaker's probe should call."""
        url = self.url_for(path_template, **params)
        return await self._attempt(
            "GET", url, None, None, None, self.settings.total_timeout, guarded=False, route=path_template, attempt=1
        )

    async def _attempt(
        self,
        method: str,
        url: str,
        query: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
        budget: float,
        *,
        guarded: bool,
        route: str,
        attempt: int,
    ) -> JsonResponse:
        breaker = self.breaker if guarded else None
        try:
            permit = breaker.acquire() if breaker is not None else None
        except CircuitOpenError:
            self._observe(method, route, "circuit_open", 0.0, attempt)
            raise
        try:
            if self.limiter is not None:
                await self.limiter.acquire()
            self.attempts += 1
            started = time.monotonic()
            try:
                with instrumentation().attempt(self.name, method, url, route=route, attempt=attempt) as trace:
                    traced = dict(headers) if headers else {}  # the attempt's own: hooks and auth add to it
                    trace.inject(traced)  # the API sees the event's trace as traceparent
                    try:
                        response = await (
                            self._send(method, url, query, json_body, traced, budget) if self.auth is None
                            else self._send_authorized(method, url, query, json_body, traced, budget))
                    except ConnectorError as failed:
                        if failed.status is not None:
                            trace.status(failed.status)
                        raise
                    trace.status(response.status)
            except BaseException as exc:
                seconds = time.monotonic() - started
                if breaker is not None and permit is not None:
                    breaker.record(permit, seconds, exc)
                if isinstance(exc, Exception):
                    self._observe(method, route, _status_word(exc), seconds, attempt)
                if isinstance(exc, TransientError) and exc.status == 429 and self.limiter is not None:
                    self.limiter.on_throttled(exc.retry_after)
                raise
            seconds = time.monotonic() - started
            if breaker is not None and permit is not None:
                breaker.record(permit, seconds, None)
            self._observe(method, route, response.status, seconds, attempt)
            if "Deprecation" in response.headers or "Sunset" in response.headers:
                self._deprecated(method, route, response.headers)
            if self.limiter is not None:
                self.limiter.on_success()
            return response
        finally:
            if breaker is not None and permit is not None:
                breaker.release(permit)

    def _deprecated(self, method: str, route: str, headers: Mapping[str, str]) -> None:
        """The API announced that this route goes away: say so once per route, count every answer."""
        key = f"{method} {route}"
        self.deprecated_responses[key] = self.deprecated_responses.get(key, 0) + 1
        if self.deprecated_responses[key] == 1:
            log.warning("connector %s: the API deprecates %s (Deprecation: %s, Sunset: %s); plan the move to "
                        "its successor", self.name, key, headers.get("Deprecation", "-"), headers.get("Sunset", "-"))
        for observer in self._deprecation_observers:
            observer(key)

    def add_deprecation_observer(self, observer: Callable[[str], None]) -> None:
        """Called with ``"<METHOD> <route>"`` for every answer that announces deprecation."""
        self._deprecation_observers.append(observer)

    def _observe(self, method: str, route: str, status: int | str, seconds: float, attempt: int) -> None:
        if self._call_observers:
            outcome = CallOutcome(self.name, method, route, status, seconds, attempt)
            for observer in self._call_observers:
                observer(outcome)

    async def _send_authorized(
        self,
        method: str,
        url: str,
        query: Mapping[str, str] | None,
        json_body: Any,
        headers: dict[str, str],
        budget: float,
    ) -> JsonResponse:
        """``_send`` with the auth headers; ``headers`` is the attempt's own dict (``_send`` adds to it)."""
        if self.auth is None:
            return await self._send(method, url, query, json_body, headers, budget)
        session = self._started()
        auth_headers = await self.auth.headers(session)
        try:
            return await self._send(method, url, query, json_body, {**headers, **auth_headers}, budget)
        except PermanentError as exc:
            if exc.status != 401 or not await self.auth.refresh(session, auth_headers):
                raise
        auth_headers = await self.auth.headers(session)
        return await self._send(method, url, query, json_body, {**headers, **auth_headers}, budget)

    async def _send(
        self,
        method: str,
        url: str,
        query: Mapping[str, str] | None,
        json_body: Any,
        headers: dict[str, str],
        budget: float,
    ) -> JsonResponse:
        session = self._started()
        for hook in self._header_hooks:
            hook(headers)
        s = self.settings
        if budget >= s.total_timeout:
            timeout = self._full_timeout  # the common case: made once, not per call
        else:
            timeout = aiohttp.ClientTimeout(
                total=max(0.001, budget), sock_connect=s.connect_timeout, sock_read=s.read_timeout
            )
        try:
            async with session.request(
                method, url, params=query, json=json_body, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                status = response.status
                if status >= 500 or status in _TRANSIENT_STATUSES:
                    raise TransientError(
                        f"{self.name}: HTTP {status} from {response.url.path}",
                        connector=self.name,
                        status=status,
                        retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
                    )
                if status >= 300:
                    raise PermanentError(
                        f"{self.name}: HTTP {status} from {response.url.path}", connector=self.name, status=status
                    )
                if status != 204 and not _is_json_type(response.content_type):
                    # refused before reading: an HTML error page or a download is not an answer
                    raise PermanentError(
                        f"{self.name}: response from {response.url.path} is {response.content_type[:60]!r}, "
                        "not JSON", connector=self.name, status=status,
                    )
                body = await self._read_capped(response)
                response_headers = response.headers
                final_url = url if not query else str(response.url)  # no redirects are followed
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransientError(f"{self.name}: timed out calling the API", connector=self.name) from exc
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"{self.name}: connection failed: {type(exc).__name__}", connector=self.name
            ) from exc
        if not body and status == 204:
            return JsonResponse(status, response_headers, None, final_url)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise PermanentError(
                f"{self.name}: response body is not JSON ({len(body)} bytes)", connector=self.name, status=status
            ) from exc
        return JsonResponse(status, response_headers, data, final_url)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        cap = self.settings.max_response_bytes
        length = response.content_length
        if length is not None and length > cap:
            raise PermanentError(
                f"{self.name}: response of {length} bytes exceeds the {cap}-byte cap",
                connector=self.name,
                status=response.status,
            )
        if length is not None and response.headers.get("Content-Encoding", "identity") == "identity":
            # Exactly Content-Length bytes, checked against the cap above. Not when compressed: the
            # length is then the compressed size, and the decompressed body is counted below.
            return await response.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > cap:
                raise PermanentError(
                    f"{self.name}: response exceeds the {cap}-byte cap", connector=self.name, status=response.status
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _started(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"connector {self.name} is not started")
        return self._session


# What quote(text, safe="") leaves as it is: ASCII letters, digits and "_.-~".
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _path_segment(value: object) -> str:
    """``value`` as one percent-encoded path segment (``/`` included); ids are mostly unreserved
    characters already, which a regex confirms faster than quote encodes."""
    text = str(value)
    return text if _UNRESERVED.fullmatch(text) is not None else quote(text, safe="")


def _status_word(exc: Exception) -> int | str:
    """How an attempt ended, for observers: the HTTP status, or a word for what had none."""
    if isinstance(exc, ConnectorError) and exc.status is not None:
        return exc.status
    cause = exc.__cause__
    if isinstance(cause, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(cause, aiohttp.ClientError):
        return "connection_error"
    return "error"


def _is_json_type(content_type: str) -> bool:
    """``application/json`` and its relatives (``application/problem+json``, ``text/json``)."""
    kind = content_type.lower()
    return kind.endswith("/json") or kind.endswith("+json")


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def _host_port(value: str, scheme: str) -> tuple[str, int]:
    parts = urlsplit(f"//{value}")
    if not parts.hostname:
        raise ValueError(f"allowed host {value!r} must be host or host:port")
    return parts.hostname, _port(scheme, parts.port)


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` as delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
