"""Scaling out: a second worker in the same group takes over part of the partitions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import group_assignment, headers_of, pipeline_under_test, wait_for

pytestmark = pytest.mark.integration


async def test_two_workers_share_the_partitions_and_enrich_every_event_once(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=4)

    with pipeline.worker(0) as first, pipeline.worker(1) as second:

        async def both_own_input_partitions() -> dict[str, set[tuple[str, int]]] | None:
            members = await group_assignment(kafka_bootstrap, pipeline.name)
            owned = [{tp for tp in tps if tp[0] == pipeline.input_topic} for tps in members.values()]
            if len(owned) == 2 and all(owned) and set.union(*owned) == {(pipeline.input_topic, p) for p in range(4)}:
                return members
            return None

        members = await wait_for(both_own_input_partitions, deadline=90, what="both workers to own partitions")
        orders = sample_orders(1000, customers=500)
        await pipeline.produce(orders)
        records = await pipeline.read([pipeline.output_topic], until=len(orders))
        assert first.alive and second.alive, first.log_tail() + second.log_tail()

    owned = sorted(len({tp for tp in tps if tp[0] == pipeline.input_topic}) for tps in members.values())
    assert owned == [2, 2]
    counts = Counter(headers_of(r)[Header.EVENT_ID] for r in records)
    assert set(counts) == {o["event_id"] for o in orders}
    assert max(counts.values()) == 1
    assert {r.partition for r in records} == {0, 1, 2, 3}


async def test_three_workers_own_the_same_partition_numbers_of_the_input_and_of_every_retry_tier(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=6)
    tiers = [f"{pipeline.name}.retry.{delay}" for delay in ("5s", "1m", "10m")]

    with pipeline.worker(0) as a, pipeline.worker(1) as b, pipeline.worker(2) as c:

        async def three_members_with_two_input_partitions_each() -> dict[str, set[tuple[str, int]]] | None:
            members = await group_assignment(kafka_bootstrap, pipeline.name)
            owned = [len({tp for tp in tps if tp[0] == pipeline.input_topic}) for tps in members.values()]
            return members if sorted(owned) == [2, 2, 2] else None

        members = await wait_for(three_members_with_two_input_partitions_each, deadline=120,
                                 what="three workers with two input partitions each")
        assert a.alive and b.alive and c.alive

    for member, partitions in members.items():
        numbers = {p for topic, p in partitions if topic == pipeline.input_topic}
        for tier in tiers:
            assert {p for topic, p in partitions if topic == tier} == numbers, (member, tier, sorted(partitions))
    every = set().union(*members.values())
    assert every == {(t, p) for t in [pipeline.input_topic, *tiers] for p in range(6)}
