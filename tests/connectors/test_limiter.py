"""Rate limits: the group-wide share, pacing, AIMD on 429 from the real sandbox, measured waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from connectors import HttpSettings, RateLimit, RateLimitSettings, RiskRequest, RiskScoreConnector
from sandbox.server import SandboxConfig
from tests.connectors.conftest import SandboxFactory


def test_a_workers_share_is_the_limit_times_the_partitions_it_owns() -> None:
    limit = RateLimit("risk", RateLimitSettings(rate=100))
    limit.set_share(owned_partitions=3, total_partitions=12)
    assert limit.ceiling == limit.rate == 25
    limit.set_share(owned_partitions=12, total_partitions=12)
    assert limit.rate == 100
    limit.set_share(owned_partitions=0, total_partitions=12)
    assert limit.rate == limit.settings.min_rate, "a worker without partitions keeps a trickle for probes"
    with pytest.raises(ValueError):
        limit.set_share(owned_partitions=5, total_partitions=4)


async def test_calls_are_paced_at_the_local_rate_and_the_wait_is_measured() -> None:
    limit = RateLimit("risk", RateLimitSettings(rate=160, burst_seconds=0.25))
    limit.set_share(owned_partitions=1, total_partitions=4)  # 40/s, bursts of 10
    began = time.monotonic()
    waits = [await limit.acquire() for _ in range(30)]
    took = time.monotonic() - began
    assert 0.45 <= took <= 0.7, f"10 at once, then 20 at 40/s: {took:.3f} s"
    assert limit.acquired == 30 and limit.wait_seconds_total == pytest.approx(sum(waits))
    assert max(waits[:10]) < 0.01 and min(waits[11:]) > 0.01
    print(f"30 acquisitions at 40/s with a burst of 10 took {took * 1000:.0f} ms")


async def test_429s_shrink_the_local_rate_multiplicatively_and_it_grows_back_additively(
    start_sandbox: SandboxFactory,
) -> None:
    limits = RateLimitSettings(rate=40, decrease_factor=0.5, decrease_cooldown=0.2, recovery_per_second=0.5)
    async with (
        start_sandbox(SandboxConfig(risk_rate=5, risk_burst=5)) as api,  # the API allows far less than 40/s
        RiskScoreConnector(HttpSettings(base_url=api.url, max_attempts=1), rate_limit=limits) as risk,
    ):
        assert risk.limiter is not None
        outcomes = await asyncio.gather(
            *(risk.score(RiskRequest("C000001", 100, "EUR")) for _ in range(20)), return_exceptions=True
        )
        throttled = sum(isinstance(o, Exception) for o in outcomes)
        after_429s = risk.limiter.rate
        assert throttled >= 10 and api.stats.throttled == throttled
        assert risk.limiter.decreases == 1, "the 429s of one burst count as one signal"
        assert after_429s <= 20.5
        began = time.monotonic()
        await asyncio.sleep(0.3)  # measuring growth over a known time, not waiting for a condition
        grown = risk.limiter.rate
        elapsed = time.monotonic() - began
    assert grown - after_429s == pytest.approx(40 * 0.5 * elapsed, rel=0.2), "+ share x 0.5 per second"
    print(f"20 calls into a 5/s API: {throttled} got 429, rate 40 -> {after_429s:.1f}/s, "
          f"{grown:.1f}/s {elapsed * 1000:.0f} ms later")


async def test_a_retry_after_holds_new_calls_back() -> None:
    limit = RateLimit("risk", RateLimitSettings(rate=1000))
    limit.on_throttled(retry_after=0.2)
    waited = await limit.acquire()
    assert 0.19 <= waited < 0.3


def test_a_rebalance_keeps_the_throttled_fraction() -> None:
    limit = RateLimit("risk", RateLimitSettings(rate=100, decrease_cooldown=0))
    limit.set_share(owned_partitions=2, total_partitions=4)
    limit.on_throttled()
    assert limit.rate == pytest.approx(25, rel=0.01)
    limit.set_share(owned_partitions=1, total_partitions=4)
    assert limit.ceiling == 25 and limit.rate == pytest.approx(12.5, rel=0.01)
