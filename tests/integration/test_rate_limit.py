"""A group-wide rate limit: three workers share one API limit without tripping it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from sandbox.server import SandboxConfig
from tests.conftest import SandboxThread
from tests.integration.harness import SERDE, TopicCollector, group_assignment, pipeline_under_test, wait_for

pytestmark = pytest.mark.integration

R = 40.0  # the API's limit, requests/s, for everyone
WINDOW = 60.0


@pytest.mark.parametrize("limiter_rate", [R, 2 * R], ids=["limiter-at-R", "limiter-at-2R"])
async def test_three_workers_hold_the_group_limit(
    kafka_bootstrap: str, unique: str, tmp_path: Path, limiter_rate: float
) -> None:
    with SandboxThread(config=SandboxConfig(risk_rate=R, risk_burst=R)) as api:
        pipeline = pipeline_under_test(kafka_bootstrap, api.url, unique, tmp_path)
        await pipeline.create_topics(partitions=6)
        orders = sample_orders(int(R * (WINDOW + 30)), customers=3000)  # more than the limit lets through
        env = {"ORDERS_ENRICH_WITH": "customers,risk", "ORDERS_RISK_BATCHING": "false",
               "STREAMS_API_RISK_RATE_LIMIT": str(limiter_rate)}
        stats = api.server.stats

        async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
            with pipeline.worker(0, **env) as a, pipeline.worker(1, **env) as b, pipeline.worker(2, **env) as c:

                async def three_members_share_the_input() -> bool:
                    members = await group_assignment(kafka_bootstrap, pipeline.name)
                    owned = [len({tp for tp in tps if tp[0] == pipeline.input_topic}) for tps in members.values()]
                    return sorted(owned) == [2, 2, 2]

                await wait_for(three_members_share_the_input, deadline=90, what="three workers with 2 partitions each")
                await pipeline.produce(orders)
                await asyncio.sleep(5)  # past the start-up burst
                requests, throttled, began = stats.requests["risk"], stats.throttled, time.monotonic()
                await asyncio.sleep(WINDOW)
                requests, throttled = stats.requests["risk"] - requests, stats.throttled - throttled
                elapsed = time.monotonic() - began
                await seen.wait_until(lambda r: len(r) >= len(orders), deadline=240, what="every event settled")
                assert a.alive and b.alive and c.alive

    accepted_rate = (requests - throttled) / elapsed
    dead = seen.on(pipeline.dlq)
    degraded = sum(1 for r in seen.on(pipeline.output_topic) if SERDE.decode(r.value)["degraded"])
    print(f"\nlimiter {limiter_rate:.0f}/s for the group, API limit {R:.0f}/s: accepted {accepted_rate:.1f}/s "
          f"over {elapsed:.0f} s, {throttled} answered 429, {len(dead)} dead-lettered, "
          f"{degraded} of {len(orders)} enriched with the fallback score")
    assert not dead
    assert accepted_rate >= 0.95 * R
    keys = [r.headers.get("Idempotency-Key") for r in stats.of("risk")]  # a state-changing call: keyed
    assert keys and all(k is not None and k.endswith(":risk:/v1/risk-scores") for k in keys)
    assert {k.removesuffix(":risk:/v1/risk-scores") for k in keys if k} <= {o["event_id"] for o in orders}
    if limiter_rate == R:
        assert throttled == 0
    else:
        assert throttled > 0  # the limiter was set too high: the API pushed back, and AIMD absorbed it
