"""Delayed retry tiers: a partition waits for its head record; others keep flowing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.kafka.clients import ensure_topics, producer
from streams.names import Header, retry_topic
from tests.conftest import SandboxThread
from tests.integration.harness import SERDE, TopicCollector, headers_of, pipeline_under_test

pytestmark = pytest.mark.integration


async def test_a_due_retry_record_is_not_held_up_by_a_later_one_in_another_partition(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=2)
    tier = retry_topic(pipeline.name, "1m")
    await ensure_topics(kafka_bootstrap, {tier: 2})  # as the worker would: as many partitions as the input
    later, due = sample_orders(2, seed=3)
    now_ms = int(time.time() * 1000)

    def hop_headers(order: dict[str, object], not_before: int, partition: int) -> list[tuple[str, bytes]]:
        return [(Header.EVENT_ID, str(order["event_id"]).encode()), (Header.ATTEMPT, b"2"),
                (Header.NOT_BEFORE, str(not_before).encode()), (Header.ORIGIN_TOPIC, pipeline.input_topic.encode()),
                (Header.ORIGIN_PARTITION, str(partition).encode()), (Header.ORIGIN_OFFSET, b"0"),
                (Header.ORIGIN_TIMESTAMP, str(now_ms).encode())]

    with pipeline.worker(0, STREAMS_RETRY_DELAYS="1m") as worker:
        async with TopicCollector(kafka_bootstrap, [pipeline.output_topic]) as seen:
            async with producer(kafka_bootstrap) as client:
                await (await client.send(tier, SERDE.encode(ORDER_PLACED, later), key=b"later", partition=0,
                                         headers=hop_headers(later, now_ms + 600_000, 0)))
                await (await client.send(tier, SERDE.encode(ORDER_PLACED, due), key=b"due", partition=1,
                                         headers=hop_headers(due, now_ms, 1)))
            sent = time.monotonic()
            await seen.wait_until(lambda r: len(r) >= 1, deadline=60, what="the due record on the output")
            waited = time.monotonic() - sent
            assert worker.alive, worker.log_tail()

    out = [headers_of(r) for r in seen.records]
    assert [h[Header.EVENT_ID] for h in out] == [due["event_id"]]
    assert out[0][Header.ATTEMPT] == "2"
    print(f"\ndue retry record reached the output {waited:.1f} s after it was produced; "
          f"the one due in 10 minutes stayed held")


async def test_records_fetched_behind_a_held_retry_record_all_come_through(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    # The first record pauses its partition while the rest of its fetched batch is in flight:
    # none of those may be skipped, and none may be committed without being processed.
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=1)
    tier = retry_topic(pipeline.name, "1m")
    await ensure_topics(kafka_bootstrap, {tier: 1})
    orders = sample_orders(300, seed=5)
    now_ms = int(time.time() * 1000)
    async with producer(kafka_bootstrap) as client:
        futures = []
        for n, order in enumerate(orders):
            headers = [(Header.EVENT_ID, order["event_id"].encode()), (Header.ATTEMPT, b"2"),
                       (Header.NOT_BEFORE, str(now_ms + 3000 + n * 5).encode())]
            futures.append(await client.send(tier, SERDE.encode(ORDER_PLACED, order), key=order["customer_id"].encode(),
                                              partition=0, headers=headers))
        for future in futures:
            await future

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic]) as seen:
        with pipeline.worker(0, STREAMS_RETRY_DELAYS="1m") as worker:
            await seen.wait_until(lambda r: len(r) >= len(orders), deadline=60, what="all 300 retried records")
            assert worker.alive, worker.log_tail()
    assert sorted(headers_of(r)[Header.EVENT_ID] for r in seen.records) == sorted(o["event_id"] for o in orders)
