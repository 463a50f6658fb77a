"""What every API connector shares: the HTTP core wired with auth, a circuit breaker and a rate limit.

    class FxRatesConnector(ApiConnector):
        name = "fx"

Each connector owns one session, one breaker and (when configured) one rate limit, so the
engine can reach them as ``connector.breaker`` and ``connector.limiter``.
"""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Self

from connectors.auth import Auth
from connectors.http import HttpConnector, HttpSettings
from connectors.resilience.breaker import BreakerSettings, CircuitBreaker
from connectors.resilience.limiter import RateLimit, RateLimitSettings


class ApiConnector:
    """Base of the per-API connectors.

    http: how to reach the API. auth: OAuth2, API key or None. breaker: thresholds of the
    connector's circuit breaker (defaults apply when None). rate_limit: the group-wide rate,
    or None for no limit.
    """

    name: ClassVar[str] = "api"

    def __init__(
        self,
        http: HttpSettings,
        *,
        auth: Auth | None = None,
        breaker: BreakerSettings | None = None,
        rate_limit: RateLimitSettings | None = None,
    ) -> None:
        self.breaker = CircuitBreaker(self.name, breaker)
        self.limiter = RateLimit(self.name, rate_limit) if rate_limit is not None else None
        self.http = HttpConnector(self.name, http, auth=auth, breaker=self.breaker, limiter=self.limiter)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} breaker={self.breaker.state}>"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()
