"""The circuit breaker against the real sandbox: thresholds, open wait, half-open probes, events."""

from __future__ import annotations

import asyncio
import logging

import pytest

from connectors import (
    BreakerSettings,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    CircuitOpenError,
    CustomerConnector,
    HttpConnector,
    HttpSettings,
    TransientError,
)
from connectors.errors import ConnectorError
from sandbox.faults import FaultSpec
from sandbox.server import SandboxServer
from streams.failures import FailureKind, classify
from tests.connectors.conftest import wait_for

OUTAGE = FaultSpec.parse({"errors": {"503": 1.0}})


def customers_http(api: SandboxServer, breaker: CircuitBreaker) -> HttpConnector:
    return HttpConnector("customers", HttpSettings(base_url=api.url, max_attempts=1), breaker=breaker)


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state now (a call, so a type checker does not narrow it across awaits)."""
    return breaker.state


async def lookup(http: HttpConnector) -> None:
    await http.get_json("/v1/customers/{id}", id="C000001")


async def test_the_breaker_opens_exactly_when_the_failure_rate_reaches_its_threshold(api: SandboxServer) -> None:
    settings = BreakerSettings(window_size=10, minimum_calls=10, failure_rate_threshold=0.5, open_duration=60)
    breaker = CircuitBreaker("customers", settings)
    async with customers_http(api, breaker) as http:
        for _ in range(5):
            await lookup(http)
        api.faults.set("customers", OUTAGE)
        for _ in range(4):
            with pytest.raises(TransientError):
                await lookup(http)
        assert state(breaker) is BreakerState.CLOSED, "4 failures of 9 calls: under the minimum"
        with pytest.raises(TransientError) as tenth:
            await lookup(http)
        assert not isinstance(tenth.value, CircuitOpenError), "the tenth call was made"
        assert state(breaker) is BreakerState.OPEN, "5 failures of 10 calls: 50 %"
        with pytest.raises(CircuitOpenError) as refused:
            await lookup(http)
    assert api.stats.requests["customers"] == 10, "an open breaker makes no call"
    assert breaker.rejected_calls == 1
    assert 59 < (refused.value.retry_after or 0) <= 60
    assert classify(refused.value).kind is FailureKind.TRANSIENT


async def test_a_call_slower_than_the_threshold_counts_towards_the_slow_call_rate(api: SandboxServer) -> None:
    api.faults.set("customers", FaultSpec.parse({"latency": {"distribution": "fixed", "ms": 60}}))
    settings = BreakerSettings(minimum_calls=3, slow_call_duration=0.05, slow_call_rate_threshold=1.0, open_duration=60)
    breaker = CircuitBreaker("customers", settings)
    async with customers_http(api, breaker) as http:
        for _ in range(3):
            await lookup(http)  # every call succeeds, slowly
    assert state(breaker) is BreakerState.OPEN


async def test_a_time_window_forgets_nothing_within_its_seconds(api: SandboxServer) -> None:
    settings = BreakerSettings(window="time", window_size=30, minimum_calls=4, failure_rate_threshold=0.75)
    breaker = CircuitBreaker("customers", settings)
    async with customers_http(api, breaker) as http:
        await lookup(http)
        api.faults.set("customers", OUTAGE)
        for _ in range(3):
            with pytest.raises(TransientError):
                await lookup(http)
    assert state(breaker) is BreakerState.OPEN


async def test_an_open_breaker_half_opens_after_its_wait_and_closes_when_probes_succeed(
    api: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connectors.breaker")
    settings = BreakerSettings(window_size=4, minimum_calls=4, open_duration=0.3, half_open_probes=2)
    breaker = CircuitBreaker("customers", settings)
    events: list[BreakerTransition] = []
    breaker.add_listener(events.append)
    api.faults.set("customers", OUTAGE)
    async with customers_http(api, breaker) as http:
        for _ in range(4):
            with pytest.raises(TransientError):
                await lookup(http)
        assert state(breaker) is BreakerState.OPEN
        await wait_for(lambda: state(breaker) is BreakerState.HALF_OPEN, deadline=2, what="half-open")
        waited = events[1].at - events[0].at
        assert 0.29 <= waited < 0.5, waited
        api.faults.clear("customers")
        await lookup(http)
        assert state(breaker) is BreakerState.HALF_OPEN, "one probe of two"
        await lookup(http)
    assert state(breaker) is BreakerState.CLOSED
    assert [(e.from_state, e.to_state) for e in events] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert events[0].failure_rate == 1.0 and events[0].calls == 4
    assert breaker.transitions == {"closed->open": 1, "open->half_open": 1, "half_open->closed": 1}
    logged = [r.getMessage() for r in caplog.records if r.name == "connectors.breaker"]
    assert len(logged) == 3 and "closed -> open" in logged[0]
    print(f"open -> half_open after {waited * 1000:.0f} ms (open_duration 300 ms)")


async def test_a_failing_probe_opens_the_breaker_again(api: SandboxServer) -> None:
    settings = BreakerSettings(window_size=2, minimum_calls=2, open_duration=0.05, half_open_probes=1)
    breaker = CircuitBreaker("customers", settings)
    api.faults.set("customers", OUTAGE)
    async with customers_http(api, breaker) as http:
        for _ in range(2):
            with pytest.raises(TransientError):
                await lookup(http)
        await wait_for(lambda: state(breaker) is BreakerState.HALF_OPEN, deadline=2)
        with pytest.raises(TransientError):
            await lookup(http)
        assert state(breaker) is BreakerState.OPEN
        with pytest.raises(CircuitOpenError):
            await lookup(http)
    assert breaker.transitions["half_open->open"] == 1


async def test_half_open_lets_only_its_probes_through(api: SandboxServer) -> None:
    settings = BreakerSettings(window_size=2, minimum_calls=2, open_duration=0.05, half_open_probes=2)
    breaker = CircuitBreaker("customers", settings)
    api.faults.set("customers", FaultSpec.parse({"errors": {"503": 1.0}}))
    async with customers_http(api, breaker) as http:
        for _ in range(2):
            with pytest.raises(TransientError):
                await lookup(http)
        await wait_for(lambda: state(breaker) is BreakerState.HALF_OPEN, deadline=2)
        api.faults.set("customers", FaultSpec.parse({"latency": {"distribution": "fixed", "ms": 100}}))
        outcomes = await asyncio.gather(*(lookup(http) for _ in range(10)), return_exceptions=True)
    assert sum(o is None for o in outcomes) == 2
    assert all(isinstance(o, CircuitOpenError) for o in outcomes if o is not None)
    assert state(breaker) is BreakerState.CLOSED


async def test_with_a_probe_the_breaker_recovers_while_no_traffic_flows(api: SandboxServer) -> None:
    """What the engine relies on: pause the partitions, await wait_until_closed(), resume."""
    settings = BreakerSettings(window_size=3, minimum_calls=3, open_duration=0.1, half_open_probes=2)
    api.faults.set("customers", OUTAGE)
    async with CustomerConnector(HttpSettings(base_url=api.url, max_attempts=1), breaker=settings) as customers:
        for _ in range(3):
            with pytest.raises(TransientError):
                await customers.get("C000042")
        with pytest.raises(CircuitOpenError) as caught:
            await customers.get("C000042")
        assert caught.value.breaker is customers.breaker
        assert not await caught.value.breaker.wait_until_closed(timeout=0.3), "probes fail during the outage"
        api.faults.clear("customers")
        assert await caught.value.breaker.wait_until_closed(timeout=3)
        assert await customers.get("C000042")
    probes = [r.path_qs for r in api.stats.of("customers")][3:-1]
    assert probes and set(probes) == {"/v1/customers/C000001"}, "only the breaker's own probes in between"


async def test_permanent_errors_and_429_do_not_open_the_breaker(api: SandboxServer) -> None:
    breaker = CircuitBreaker("customers", BreakerSettings(window_size=4, minimum_calls=4))
    async with customers_http(api, breaker) as http:
        for _ in range(4):
            with pytest.raises(ConnectorError):
                await http.get_json("/v1/customers/{id}", id="nobody")  # 404: the API is fine
        api.faults.set("customers", FaultSpec.parse({"errors": {"429": 1.0}}))
        for _ in range(4):
            with pytest.raises(TransientError):
                await lookup(http)
    assert state(breaker) is BreakerState.CLOSED
