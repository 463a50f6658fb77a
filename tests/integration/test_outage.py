"""An API outage under steady load: the breaker opens, consumption pauses, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.kafka.clients import ensure_topics, producer
from streams.names import Header, retry_topic
from tests.conftest import SandboxThread
from tests.integration.harness import SERDE, TopicCollector, headers_of, pipeline_under_test, set_faults

pytestmark = pytest.mark.integration

RATE = 150  # events/s, steady
BEFORE, OUTAGE, AFTER = 8.0, 30.0, 8.0


async def test_a_30_second_outage_pauses_consumption_instead_of_flooding_the_retry_tiers(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=4)
    tiers = [retry_topic(pipeline.name, d) for d in ("5s", "1m", "10m")]
    await ensure_topics(kafka_bootstrap, dict.fromkeys(tiers, 4))
    total = int(RATE * (BEFORE + OUTAGE + AFTER))
    orders = sample_orders(total, customers=2000)
    sent_at: dict[str, float] = {}

    async def steady_load() -> None:
        async with producer(kafka_bootstrap) as client:
            began = time.monotonic()
            for n, order in enumerate(orders):
                delay = began + n / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await client.send(pipeline.input_topic, SERDE.encode(ORDER_PLACED, order),
                                  key=order["customer_id"].encode())
                sent_at[order["event_id"]] = time.monotonic()

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq, *tiers]) as seen:
        with pipeline.worker(0) as worker:
            load = asyncio.create_task(steady_load())
            await asyncio.sleep(BEFORE)
            await set_faults(fault_sandbox.url, "customers", {"outages": [{"start_s": 0, "duration_s": OUTAGE,
                                                                           "status": 503}]})
            outage_began = time.monotonic()
            await asyncio.sleep(OUTAGE)
            outage_ended = time.monotonic()
            await load
            await seen.wait_until(lambda r: len(seen.on(pipeline.output_topic)) >= total, deadline=120,
                                  what="every event on the output after recovery")
            assert worker.alive, worker.log_tail()
        log_text = worker.log_path.read_text()

    during = [e for e, t in sent_at.items() if outage_began <= t < outage_ended]
    retried = [r for t in tiers for r in seen.on(t)]
    enriched = {headers_of(r)[Header.EVENT_ID] for r in seen.on(pipeline.output_topic)}
    assert enriched == {o["event_id"] for o in orders}
    assert not seen.on(pipeline.dlq)
    assert "circuit of connector customers is open: paused" in log_text
    assert "circuit of connector customers closed after" in log_text
    assert len(retried) < 0.01 * len(during), f"{len(retried)} retry records for {len(during)} events"
    print(f"\n{total} events at {RATE}/s, {len(during)} produced during the {OUTAGE:.0f} s outage; "
          f"{len(retried)} went to a retry tier ({100 * len(retried) / len(during):.2f}%), 0 dead-lettered, "
          f"all {len(enriched)} on the output after recovery")
