"""The engine against a misbehaving API: key order under random latency, retry tiers, DLQ replay."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from streams.kafka.clients import ensure_topics
from streams.names import Header, retry_topic
from tests.conftest import SandboxThread
from tests.integration.harness import TopicCollector, headers_of, pipeline_under_test, set_faults

pytestmark = pytest.mark.integration


async def test_each_key_keeps_input_order_under_random_api_latency(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=8)
    latency = {"distribution": "uniform", "min_ms": 1, "max_ms": 30}
    await set_faults(fault_sandbox.url, "customers", {"latency": latency})
    orders = sample_orders(20_000, customers=250)
    await pipeline.produce(orders)

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic]) as seen:
        with pipeline.worker(0) as worker:
            await seen.wait_until(lambda r: len(r) >= len(orders), deadline=300, what="20,000 outputs")
        peak = int(re.findall(r"peak in flight (\d+)", worker.log_path.read_text())[-1])

    expected: dict[str, list[str]] = defaultdict(list)
    for order in orders:
        expected[order["customer_id"]].append(order["event_id"])
    actual: dict[str, list[str]] = defaultdict(list)
    for record in seen.records:  # per output partition in offset order; one key lives in one partition
        actual[record.key.decode()].append(headers_of(record)[Header.EVENT_ID])
    assert len(expected) >= 200
    assert actual == expected
    assert peak >= 50, f"peak in flight was {peak}"
    print(f"\n{len(orders)} events over {len(expected)} keys in key order; peak in flight {peak}")


async def test_transient_failures_hop_through_retry_tiers_and_permanent_ones_are_dead_lettered(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=4)
    await set_faults(fault_sandbox.url, "customers", {"errors": {"503": 0.10, "404": 0.01}})
    delays = ["1s", "2s", "3s", "4s", "5s", "6s"]  # six hops: P(an event fails all seven tries) = 1e-7
    tiers = [retry_topic(pipeline.name, d) for d in delays]
    orders = sample_orders(2_000, customers=500)
    await pipeline.produce(orders)

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
        with pipeline.worker(0, STREAMS_RETRY_DELAYS=",".join(delays), STREAMS_HTTP_MAX_ATTEMPTS="1") as worker:
            await seen.wait_until(lambda r: len({headers_of(x)[Header.EVENT_ID] for x in r}) >= len(orders),
                                  deadline=180, what="every event on the output or in the DLQ")
            assert worker.alive, worker.log_tail()
        async with TopicCollector(kafka_bootstrap, tiers) as hops:
            await hops.wait_until(lambda r: len(r) > 0, deadline=10, what="retry records")
            await asyncio.sleep(1)  # let the collector read the tiers to their end

    enriched = {headers_of(r)[Header.EVENT_ID]: headers_of(r) for r in seen.on(pipeline.output_topic)}
    dead = {headers_of(r)[Header.EVENT_ID]: headers_of(r) for r in seen.on(pipeline.dlq)}
    retried = {headers_of(r)[Header.EVENT_ID] for r in hops.records}
    assert not set(enriched) & set(dead)
    assert set(enriched) | set(dead) == {o["event_id"] for o in orders}
    assert len(retried) > 100  # about 10% of 2,000 fail at least once
    for event_id in retried - set(dead):
        assert int(enriched[event_id][Header.ATTEMPT]) > 1
    for headers in dead.values():
        assert headers[Header.ERROR_KIND] == "permanent"
        assert headers[Header.ERROR_STATUS] == "404"
        assert headers[Header.ERROR_CONNECTOR] == "customers"
        assert headers[Header.ERROR_CLASS] == "Permanent"  # the public class an Api raises for a 404
        assert int(headers[Header.FIRST_FAILURE_AT]) > 0
        assert headers[Header.ORIGIN_TOPIC] == pipeline.input_topic
    hops_per_event = Counter(headers_of(r)[Header.EVENT_ID] for r in hops.records)
    print(f"\n{len(orders)} events: {len(enriched)} enriched ({len(retried - set(dead))} after retries, "
          f"up to {max(hops_per_event.values())} hops), {len(dead)} dead-lettered as permanent")


async def test_dead_letters_replayed_after_the_fault_is_fixed_reach_the_output_once_even_replayed_twice(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=4)
    await set_faults(fault_sandbox.url, "customers", {"errors": {"404": 0.05}})
    orders = sample_orders(1_000, customers=500)
    await pipeline.produce(orders)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAMS_APP": "pipelines.orders:pipeline",
           "STREAMS_PIPELINE": pipeline.name,
           "STREAMS_INPUT_TOPIC": pipeline.input_topic}

    async def cli(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streams", *args, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
        return output.decode()

    async def replay() -> str:
        return await cli("dlq", "replay", "--kind", "permanent", "--rate", "500")

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
        with pipeline.worker(0) as worker:
            await seen.wait_until(lambda r: len(r) >= len(orders), deadline=120, what="first pass")
            dead = {headers_of(r)[Header.EVENT_ID] for r in seen.on(pipeline.dlq)}
            assert dead, "the 5% fault should have dead-lettered some events"
            await set_faults(fault_sandbox.url, "customers", None)
            listing = await cli("dlq", "list", "--kind", "permanent", "--status", "404")
            assert all(event_id in listing for event_id in dead), listing
            first, second = await replay(), await replay()
            await seen.wait_until(lambda r: len(r) >= len(orders) + len(dead), deadline=120, what="replayed")
            await asyncio.sleep(3)  # time for a duplicate to show, were there one
            assert worker.alive, worker.log_tail()

    assert f"replayed {len(dead)} " in first and "skipped 0" in first
    assert "replayed 0 " in second and f"skipped {len(dead)}" in second
    counts = Counter(headers_of(r)[Header.EVENT_ID] for r in seen.on(pipeline.output_topic))
    assert set(counts) == {o["event_id"] for o in orders}
    assert all(counts[event_id] == 1 for event_id in dead)
    replayed = [headers_of(r) for r in seen.on(pipeline.output_topic) if headers_of(r)[Header.EVENT_ID] in dead]
    assert all(h[Header.ORIGIN_TOPIC] == pipeline.input_topic for h in replayed)
    print(f"\n{len(dead)} dead letters replayed once; second replay skipped them all")


async def test_with_strict_key_order_later_events_of_a_key_wait_behind_its_retry(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=1)
    tier = retry_topic(pipeline.name, "2s")
    await ensure_topics(kafka_bootstrap, {tier: 1})
    orders = sample_orders(10, customers=1)  # one customer: one key
    first, later = orders[0], orders[1:]
    await set_faults(fault_sandbox.url, "customers", {"outages": [{"start_s": 0, "duration_s": None, "status": 503}]})

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, tier]) as seen:
        with pipeline.worker(0, STREAMS_STRICT_KEY_ORDER="true", STREAMS_RETRY_DELAYS="2s",
                             STREAMS_HTTP_MAX_ATTEMPTS="1", ORDERS_ENRICH_WITH="customers") as worker:
            await pipeline.produce([first])
            await seen.wait_until(lambda r: len(seen.on(tier)) == 1, deadline=60, what="the first event retrying")
            await set_faults(fault_sandbox.url, "customers", None)  # the API is back for everything after
            await pipeline.produce(later)
            await seen.wait_until(lambda r: len(seen.on(pipeline.output_topic)) == len(orders), deadline=60,
                                  what="all ten events enriched")
            assert worker.alive, worker.log_tail()

    assert [headers_of(r)[Header.EVENT_ID] for r in seen.on(pipeline.output_topic)] == [o["event_id"] for o in orders]
    parked = [headers_of(r) for r in seen.on(tier) if Header.PARKED_BEHIND in headers_of(r)]
    assert [h[Header.EVENT_ID] for h in parked] == [o["event_id"] for o in later]
    assert {h[Header.PARKED_BEHIND] for h in parked} == {first["event_id"]}
    print(f"\nstrict order: {len(parked)} later events parked behind the retrying one; output in input order")
