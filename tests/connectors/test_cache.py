"""The response cache, through the FX connector against the real sandbox."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import pytest

from connectors import (
    BreakerSettings,
    BreakerState,
    CacheSettings,
    CircuitOpenError,
    FxRates,
    FxRatesConnector,
    HttpSettings,
    Source,
)
from connectors.resilience.cache import freshness_of
from sandbox.faults import FaultSpec
from sandbox.server import SandboxConfig, SandboxServer
from tests.connectors.conftest import FakeClock, SandboxFactory


async def test_a_hundred_concurrent_identical_lookups_make_one_upstream_call(api: SandboxServer) -> None:
    api.faults.set("fx", FaultSpec.parse({"latency": {"distribution": "fixed", "ms": 50}}))
    async with FxRatesConnector(HttpSettings(base_url=api.url)) as fx:
        results = await asyncio.gather(*(fx.rates("EUR") for _ in range(100)))
    assert api.stats.requests["fx"] == 1
    assert all(r.value is results[0].value for r in results), "one answer, shared"
    assert all(r.source is Source.LIVE and not r.degraded for r in results)


async def test_answers_are_served_from_the_cache_for_as_long_as_max_age_says(
    start_sandbox: SandboxFactory, clock: FakeClock
) -> None:
    async with (
        start_sandbox(SandboxConfig(fx_max_age=60)) as api,
        FxRatesConnector(HttpSettings(base_url=api.url), clock=clock) as fx,
    ):
        first = await fx.rate("EUR", "USD")
        clock.advance(59)
        cached = await fx.rate("EUR", "USD")
        clock.advance(2)
        refreshed = await fx.rate("EUR", "USD")
    assert (first.source, cached.source, refreshed.source) == (Source.LIVE, Source.CACHE, Source.LIVE)
    assert first.value == cached.value == Decimal("1.086957")
    assert api.stats.requests["fx"] == 2


async def test_the_least_recently_used_answer_goes_when_the_cache_is_full(api: SandboxServer) -> None:
    async with FxRatesConnector(HttpSettings(base_url=api.url), cache=CacheSettings(max_entries=2)) as fx:
        for base in ("EUR", "USD", "EUR", "GBP"):  # EUR was used after USD, so USD goes
            await fx.rates(base)
        assert (await fx.rates("EUR")).source is Source.CACHE
        assert (await fx.rates("USD")).source is Source.LIVE
    assert len(fx.cache) == 2 and fx.cache.evictions == 2


async def test_stale_answers_stand_in_while_the_breaker_is_open(api: SandboxServer, clock: FakeClock) -> None:
    breaker = BreakerSettings(window_size=2, minimum_calls=2, open_duration=60)
    settings = HttpSettings(base_url=api.url, max_attempts=1)
    lookups: list[str] = []
    async with FxRatesConnector(settings, breaker=breaker, cache=CacheSettings(stale_if_error=600), clock=clock) as fx:
        fx.cache.add_lookup_observer(lookups.append)
        live = await fx.rates("EUR")
        clock.advance(61)  # past max-age=60
        async with (  # the outage starts mid-run, through the admin API
            aiohttp.ClientSession() as admin,
            admin.put(f"{api.url}/admin/faults/fx", json={"outages": [{"duration_s": None}]}) as response,
        ):
            assert response.status == 200
        for _ in range(2):  # each fails upstream, and the stale answer stands in
            assert (await fx.rates("EUR")).source is Source.STALE
        assert fx.breaker.state is BreakerState.OPEN
        calls_before = api.stats.requests["fx"]
        stale = await fx.rates("EUR")
    assert api.stats.requests["fx"] == calls_before, "the open breaker made no call"
    assert stale.source is Source.STALE and stale.degraded
    assert stale.value == live.value
    assert stale.reason is not None and stale.reason.startswith("CircuitOpenError")
    assert lookups == ["miss", "stale", "stale", "stale"]


async def test_without_a_stale_answer_an_open_breaker_raises_or_the_fallback_stands_in(api: SandboxServer) -> None:
    breaker = BreakerSettings(window_size=1, minimum_calls=1, open_duration=60)
    settings = HttpSettings(base_url=api.url, max_attempts=1)
    fallback = FxRates("EUR", "fallback", {"USD": Decimal("1.1")})
    api.faults.set("fx", FaultSpec.parse({"errors": {"503": 1.0}}))
    async with (
        FxRatesConnector(settings, breaker=breaker) as required,
        FxRatesConnector(settings, breaker=breaker, fallback=fallback) as optional,
    ):
        with pytest.raises(Exception):  # noqa: B017 - the transient 503 that opens the breaker
            await required.rates("EUR")
        with pytest.raises(CircuitOpenError):
            await required.rates("EUR")
        degraded = await optional.rate("EUR", "USD")
    assert degraded.source is Source.FALLBACK and degraded.degraded and degraded.value == Decimal("1.1")


def test_cache_control_directives_decide_how_long_an_answer_is_fresh() -> None:
    settings = CacheSettings(default_ttl=60)
    assert freshness_of({"Cache-Control": "no-store"}, settings).ttl is None
    assert freshness_of({"Cache-Control": "public, max-age=5"}, settings).ttl == 5
    assert freshness_of({"Cache-Control": "max-age=5", "Age": "2"}, settings).ttl == 3
    assert freshness_of({"Cache-Control": "max-age=5, stale-if-error=30"}, settings).stale_if_error == 30
    assert freshness_of({}, settings).ttl == 60
