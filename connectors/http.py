"""The HTTP core every connector uses: one aiohttp session, timeouts, typed errors, retries.

    async with HttpConnector("customers", HttpSettings(base_url="http://127.0.0.1:8080")) as http:
        body = await http.get_json("/v1/customers/{id}", id="C000042")

Path parameters are percent-encoded (``/`` included), and every URL is checked against the
base URL's host, so a templated value can neither change the path nor reach another host.
Failures become ``TransientError`` or ``PermanentError`` (see ``streams.failures``).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from connectors.errors import PermanentError, TransientError

_TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How one connector talks to its API.

    base_url: scheme, host and port of the API (a path prefix is kept).
    connect_timeout / read_timeout / total_timeout: seconds; total bounds one attempt.
    max_connections: pool size; size it to the pipeline's concurrency.
    max_response_bytes: a larger body is refused (PermanentError), never read whole.
    max_attempts: in-call attempts for transient failures, the first one included.
    backoff_base / backoff_cap: full-jitter backoff, attempt n sleeps U(0, min(cap, base*2**n)).
    retry_after_cap: the longest ``Retry-After`` obeyed inside a call; beyond it, give up.
    """

    base_url: str
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    total_timeout: float = 10.0
    max_connections: int = 100
    max_response_bytes: int = 1 << 20
    max_attempts: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    retry_after_cap: float = 2.0


class HttpConnector:
    """An API client for one connector: pooled session, timeouts, retries, typed errors."""

    __slots__ = ("_base", "_host", "_session", "name", "settings")

    def __init__(self, name: str, settings: HttpSettings) -> None:
        self.name = name
        self.settings = settings
        parts = urlsplit(settings.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"connector {name}: base URL {settings.base_url!r} must be http(s)://host[:port]")
        self._host = (parts.hostname, parts.port)
        self._base = settings.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

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
                connector=aiohttp.TCPConnector(limit=s.max_connections, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=s.total_timeout, sock_connect=s.connect_timeout, sock_read=s.read_timeout
                ),
                headers={"Accept": "application/json", "User-Agent": f"streams-connector/{self.name}"},
                raise_for_status=False,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, path_template: str, **params: str) -> str:
        """Fill a path template with percent-encoded parameters; refuse other hosts."""
        encoded = {key: quote(str(value), safe="") for key, value in params.items()}
        url = self._base + path_template.format(**encoded)
        parts = urlsplit(url)
        if (parts.hostname, parts.port) != self._host:
            raise PermanentError(
                f"URL host {parts.hostname!r} is not the allowed host of connector {self.name}",
                connector=self.name,
            )
        return url

    async def get_json(self, path_template: str, headers: dict[str, str] | None = None, **params: str) -> Any:
        """GET a JSON document, retrying transient failures with full-jitter backoff."""
        url = self.url_for(path_template, **params)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._get_once(url, headers)
            except TransientError as exc:
                if attempt >= self.settings.max_attempts:
                    raise
                delay = self._backoff(attempt, exc.retry_after)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        s = self.settings
        if retry_after is not None:
            return retry_after if retry_after <= s.retry_after_cap else None
        return random.uniform(0, min(s.backoff_cap, s.backoff_base * 2 ** (attempt - 1)))

    async def _get_once(self, url: str, headers: dict[str, str] | None) -> Any:
        if self._session is None:
            raise RuntimeError(f"connector {self.name} is not started")
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as response:
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
                body = await self._read_capped(response)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransientError(f"{self.name}: timed out calling the API", connector=self.name) from exc
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"{self.name}: connection failed: {type(exc).__name__}", connector=self.name
            ) from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise PermanentError(
                f"{self.name}: response body is not JSON ({len(body)} bytes)", connector=self.name, status=status
            ) from exc

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        cap = self.settings.max_response_bytes
        if response.content_length is not None and response.content_length > cap:
            raise PermanentError(
                f"{self.name}: response of {response.content_length} bytes exceeds the {cap}-byte cap",
                connector=self.name,
                status=response.status,
            )
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


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` as delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None
