"""The FX-rate API: ``GET /v1/fx-rates/{base}`` returns today's rates, cacheable (Cache-Control).

    async with FxRatesConnector(HttpSettings(base_url=url)) as fx:
        result = await fx.rate("EUR", "USD")     # ConnectorResult[Decimal]
        result.value, result.source, result.degraded

Answers are cached as long as the API's ``max-age`` says; concurrent lookups of one base share
a single request; while the API fails (or the breaker is open) an expired answer stands in,
marked stale. With a ``fallback`` the connector is optional: with nothing cached either, the
fallback rates stand in, marked degraded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from connectors.auth import Auth
from connectors.base import ApiConnector
from connectors.errors import PermanentError
from connectors.http import HttpSettings
from connectors.resilience.breaker import BreakerSettings
from connectors.resilience.cache import CacheSettings, Freshness, ResponseCache, freshness_of
from connectors.resilience.limiter import RateLimitSettings
from connectors.results import ConnectorResult, with_fallback

_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class FxRates:
    """Units of each quote currency per one unit of ``base``, as of a date."""

    base: str
    as_of: str
    rates: Mapping[str, Decimal] = field(hash=False)


class FxRatesConnector(ApiConnector):
    """Looks up exchange rates through a cache that honours the API's Cache-Control."""

    name = "fx"

    def __init__(
        self,
        settings: HttpSettings,
        *,
        auth: Auth | None = None,
        breaker: BreakerSettings | None = None,
        rate_limit: RateLimitSettings | None = None,
        cache: CacheSettings | None = None,
        fallback: FxRates | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, auth=auth, breaker=breaker, rate_limit=rate_limit)
        self.cache: ResponseCache[str, FxRates] = ResponseCache(self.name, cache, clock=clock)
        self.fallback = fallback
        self.breaker.set_probe(lambda: self.http.probe("/v1/fx-rates/{base}", base="EUR"))

    async def rates(self, base: str) -> ConnectorResult[FxRates]:
        """All rates for ``base``: cached, live, stale or fallback (see ``result.source``)."""
        base = base.upper()
        if not _CURRENCY.match(base):
            raise PermanentError(f"{self.name}: {base!r} is not a currency code", connector=self.name)
        return await with_fallback(self.cache.get_or_load(base, lambda: self._load(base)), self.fallback, self.name)

    async def rate(self, base: str, quote: str) -> ConnectorResult[Decimal]:
        """Units of ``quote`` per one ``base``."""
        result = await self.rates(base)
        if quote.upper() == result.value.base:
            value = Decimal(1)
        elif (found := result.value.rates.get(quote.upper())) is not None:
            value = found
        else:
            raise PermanentError(f"{self.name}: no rate from {base} to {quote!r}", connector=self.name)
        return ConnectorResult(value, result.source, result.connector, result.reason)

    async def _load(self, base: str) -> tuple[FxRates, Freshness]:
        response = await self.http.get("/v1/fx-rates/{base}", base=base)
        return self._to_rates(response.data, base), freshness_of(response.headers, self.cache.settings)

    def _to_rates(self, body: Any, base: str) -> FxRates:
        if not isinstance(body, dict) or body.get("base") != base or not isinstance(body.get("rates"), dict):
            raise PermanentError(f"{self.name}: answer is not the rates of {base}", connector=self.name)
        rates: dict[str, Decimal] = {}
        for quote, value in body["rates"].items():
            try:
                rate = Decimal(str(value))
            except InvalidOperation:
                raise PermanentError(f"{self.name}: rate for {quote!r} is not a number", connector=self.name) from None
            if not isinstance(quote, str) or not _CURRENCY.match(quote) or not rate.is_finite() or rate <= 0:
                raise PermanentError(f"{self.name}: bad rate entry for {quote!r}", connector=self.name)
            rates[quote] = rate
        return FxRates(base, str(body.get("as_of", "")), MappingProxyType(rates))
