"""Strict key order (``STREAMS_STRICT_KEY_ORDER=true``) across a SIGKILL and a rebalance, on a real broker
with the sandbox API failing 10% of calls transiently (503) and 1% permanently (404).

What the workers wrote is read back by confluent-kafka (librdkafka, not the workers' client). Each
key's outputs must come in input order (first deliveries: a restart may deliver an event again, see
docs/strict-order.md), every event must reach the output or the DLQ, and the events parked behind
a dead-lettered head must be delivered. The tier partitions' contents are rebuilt by the new
owner (streams.engine.parking), which its log reports.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pipelines.orders_samples import sample_orders
from streams.kafka.clients import partition_counts, producer
from streams.names import Header, retry_topic
from tests.conftest import SandboxThread
from tests.integration.harness import (
    PipelineUnderTest,
    TopicCollector,
    committed_offsets,
    headers_of,
    pipeline_under_test,
    set_faults,
)

pytestmark = pytest.mark.integration

# Six hops: P(an event fails all seven tries) = 1e-7. The tiers after the first outlast a restart
# (session timeout and start-up): a head waiting there is not due yet when the events parked behind
# it in the first tier come back, which is when an order rebuilt from nothing would let them overtake.
DELAYS = ["1s", "20s", "20s", "20s", "20s", "20s"]
FAULTS = {"errors": {"503": 0.10, "404": 0.01}}


def _strict_env(delays: list[str] = DELAYS) -> dict[str, str]:
    return {"STREAMS_STRICT_KEY_ORDER": "true", "STREAMS_RETRY_DELAYS": ",".join(delays),
            "STREAMS_HTTP_MAX_ATTEMPTS": "1", "ORDERS_ENRICH_WITH": "customers", "STREAMS_SESSION_TIMEOUT": "6"}


def _confluent_read(bootstrap: str, topic: str, partitions: int) -> list[tuple[str, dict[str, str]]]:
    """(key, headers) of every record of ``topic``, partition by partition in offset order, as a
    confluent-kafka consumer reading read_committed sees them up to the end of each partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"strict-check-{os.getpid()}-{time.time()}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    by_partition: dict[int, list[tuple[str, dict[str, str]]]] = defaultdict(list)
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        at_end: set[int] = set()
        give_up = time.monotonic() + 120
        while len(at_end) < partitions:
            assert time.monotonic() < give_up, f"could not read {topic} to its end"
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            headers = {name: (value or b"").decode("utf-8", "replace") for name, value in message.headers() or []}
            by_partition[message.partition()].append(((message.key() or b"").decode(), headers))
    finally:
        consumer.close()
    return [record for p in sorted(by_partition) for record in by_partition[p]]


async def _check(pipeline: PipelineUnderTest, orders: list[dict[str, object]]) -> dict[str, int]:
    """The Done-when of strict key order, on what confluent-kafka reads back; returns figures to print."""
    counts = await partition_counts(pipeline.bootstrap, [pipeline.output_topic, pipeline.dlq])
    outputs = _confluent_read(pipeline.bootstrap, pipeline.output_topic, counts[pipeline.output_topic])
    dead = [headers for _, headers in _confluent_read(pipeline.bootstrap, pipeline.dlq, counts[pipeline.dlq])]
    dead_ids = {headers[Header.EVENT_ID] for headers in dead}
    output_ids = {headers[Header.EVENT_ID] for _, headers in outputs}
    every_id = {str(o["event_id"]) for o in orders}
    assert output_ids | dead_ids == every_id, f"{len(every_id - output_ids - dead_ids)} events neither output nor DLQ"

    position = {str(o["event_id"]): n for n, o in enumerate(orders)}
    key_of = {str(o["event_id"]): str(o["customer_id"]) for o in orders}
    first_seen: dict[str, list[str]] = defaultdict(list)  # per key: first deliveries, in output order
    seen: set[str] = set()
    for key, headers in outputs:  # one key lives in one output partition: its records are in order here
        event_id = headers[Header.EVENT_ID]
        assert key_of[event_id] == key
        if event_id not in seen:
            seen.add(event_id)
            first_seen[key].append(event_id)
    # A dead-lettered event is out of its key's sequence; the rest must come in input order.
    out_of_order = {key: ids for key, ids in first_seen.items()
                    if [i for i in ids if i not in dead_ids] != sorted((i for i in ids if i not in dead_ids),
                                                                       key=position.__getitem__)}
    assert out_of_order == {}, f"{len(out_of_order)} keys out of order, e.g. {next(iter(out_of_order.items()))}"

    heads = [h for h in dead if int(h.get(Header.BEHIND_COUNT, "0")) > 0]
    assert heads, "no dead-lettered event had later events of its key parked behind it"
    went_on = 0
    for headers in heads:
        listed = [i for i in headers.get(Header.BEHIND_IDS, "").split(",") if i and not i.endswith("…")]
        assert listed, headers
        for event_id in listed:
            assert key_of[event_id] == key_of[headers[Header.EVENT_ID]]
            assert position[event_id] > position[headers[Header.EVENT_ID]]
            assert event_id in output_ids or event_id in dead_ids, f"{event_id} behind a dead head was lost"
            went_on += event_id in output_ids
    assert went_on > 0
    return {"outputs": len(outputs), "duplicates": len(outputs) - len(output_ids), "dead": len(dead_ids),
            "dead_heads": len(heads), "went_on": went_on, "keys": len(first_seen)}


def _rebuilt(log: str) -> tuple[int, int]:
    """(partitions rebuilt, events found outstanding) from a worker's log lines."""
    found = re.findall(r"rebuilt from \d+ retry tier records: (\d+) events", log)
    return len(found), sum(int(n) for n in found)


async def test_strict_order_holds_across_a_sigkill_with_transient_and_permanent_api_faults(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path, runtime: str
) -> None:
    events, keys = 10_000, 500
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    pipeline.runtime = runtime
    await pipeline.create_topics(partitions=8)
    await set_faults(fault_sandbox.url, "customers", FAULTS)
    orders = sample_orders(events, customers=keys)
    await pipeline.produce(orders[: events // 2])  # the other half arrives while the worker is down
    began = time.monotonic()

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
        first = pipeline.worker(0, **_strict_env()).start()
        try:
            await seen.wait_until(lambda r: len(seen.on(pipeline.output_topic)) >= 2_000, deadline=300,
                                  what="2,000 outputs")
        finally:
            first.kill()  # SIGKILL: no drain, no commit; keys are mid-retry
        killed_at = len(set(seen.event_ids(pipeline.output_topic)))
        await pipeline.produce(orders[events // 2:])  # new events of keys whose earlier ones wait in a tier
        with pipeline.worker(1, **_strict_env()) as second:
            await seen.wait_until(lambda r: len(set(seen.event_ids(pipeline.output_topic, pipeline.dlq))) >= events,
                                  deadline=600, what="every event on the output or in the DLQ")
            assert second.alive, second.log_tail()
    took = time.monotonic() - began
    partitions_rebuilt, outstanding = _rebuilt(second.log_path.read_text(errors="replace"))
    assert partitions_rebuilt >= 8 and outstanding > 0, "the restarted worker found no key mid-retry to rebuild"

    figures = await _check(pipeline, orders)
    committed = await committed_offsets(kafka_bootstrap, pipeline.name, pipeline.input_topic)
    print(f"\nstrict order across SIGKILL ({runtime}): {events} events over {figures['keys']} keys; "
          f"killed after {killed_at} outputs; restart rebuilt {outstanding} outstanding events over "
          f"{partitions_rebuilt} partitions; "
          f"{figures['outputs']} output records ({figures['duplicates']} redelivered), "
          f"{figures['dead']} dead-lettered, "
          f"{figures['dead_heads']} dead heads with {figures['went_on']} later events delivered; "
          f"input committed {sum(committed.values())}; {took:.0f} s from start to the last event")


async def test_strict_order_holds_when_a_second_worker_joins_mid_run(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    events, keys = 2_000, 100
    delays = ["1s", "10s", "10s", "10s", "10s", "10s"]  # a rebalance hands over in seconds: 10 s outlasts it
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=8)
    await set_faults(fault_sandbox.url, "customers", FAULTS)
    orders = sample_orders(events, customers=keys, seed=11)
    await pipeline.produce(orders[: events // 2])  # the other half arrives as the second worker joins

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
        with pipeline.worker(0, **_strict_env(delays)) as first:
            await seen.wait_until(lambda r: len(seen.on(pipeline.output_topic)) >= 400, deadline=300,
                                  what="400 outputs")
            with pipeline.worker(1, **_strict_env(delays)) as second:
                await pipeline.produce(orders[events // 2:])
                await seen.wait_until(lambda r: len({headers_of(x)[Header.EVENT_ID] for x in r}) >= events,
                                      deadline=600, what="every event on the output or in the DLQ")
                assert first.alive and second.alive, first.log_tail() + second.log_tail()
    rebuilt_second = _rebuilt(second.log_path.read_text(errors="replace"))
    assert rebuilt_second[0] > 0, "the joining worker rebuilt no partition"
    figures = await _check(pipeline, orders)
    print(f"\nstrict order across a rebalance: {events} events over {figures['keys']} keys; joining worker rebuilt "
          f"{rebuilt_second[0]} partitions ({rebuilt_second[1]} outstanding events); {figures['dead']} dead-lettered, "
          f"{figures['dead_heads']} dead heads with {figures['went_on']} later events delivered")


async def test_the_rebuild_reads_the_tiers_from_the_groups_committed_offset(
    kafka_bootstrap: str, unique: str
) -> None:
    """TierScanner against the broker: records before the group's committed offset are done; the
    ones after are what the next owner finds outstanding."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioTopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from streams.engine.parking import TierCopy, TierScanner
    from streams.kafka.clients import ensure_topics

    group = f"strict-scan-{unique}"
    tiers = [retry_topic(group, d) for d in ("1s", "1m")]
    await ensure_topics(kafka_bootstrap, {t: 2 for t in tiers})
    async with producer(kafka_bootstrap) as client:
        for n in range(6):  # partition 1 of tier 0: offsets 0..5; hop 1
            headers = [(Header.EVENT_ID, f"evt-{n}".encode()), (Header.ORIGIN_PARTITION, b"1"),
                       (Header.ORIGIN_OFFSET, str(10 + n).encode()), (Header.HOP, b"1")]
            await (await client.send(tiers[0], b"v", key=f"K{n % 2}".encode(), partition=1, headers=headers))
        headers = [(Header.EVENT_ID, b"evt-4"), (Header.ORIGIN_PARTITION, b"1"), (Header.ORIGIN_OFFSET, b"14"),
                   (Header.HOP, b"2")]
        await (await client.send(tiers[1], b"v", key=b"K0", partition=1, headers=headers))
        await (await client.send(tiers[1], b"v", key=b"K0", partition=0, headers=headers))  # another partition
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([AioTopicPartition(tiers[0], 1)])
        await committer.commit({AioTopicPartition(tiers[0], 1): OffsetAndMetadata(4, "")})
    finally:
        await committer.stop()

    copies = await TierScanner(kafka_bootstrap, group, tiers)(1)
    assert sorted(copies, key=lambda c: (c.tier, c.origin_offset)) == [
        TierCopy(b"K0", 14, "evt-4", 0, 1), TierCopy(b"K1", 15, "evt-5", 0, 1), TierCopy(b"K0", 14, "evt-4", 1, 2)]
