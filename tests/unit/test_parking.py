"""Strict key order: the parking state, its rebuild from retry tier records, and the processor using it
after a restart (streams.engine.parking). The tiers here are lists of the records the real
``EventProcessor`` routed; docs/strict-order.md tells the story these tests check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.errors import KafkaConnectionError

from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from streams import Permanent, Transient
from streams.engine.parking import KeyParking, PartitionParking, TierCopy, copy_of
from streams.engine.processor import EventProcessor
from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.retry import RetryPolicy
from streams.engine.routing import admit_headers
from streams.names import Header
from streams.serde import AvroSerde, EmbeddedRegistry

SERDE = AvroSerde(EmbeddedRegistry.load())
RETRY = RetryPolicy("strict", ["5s", "1m", "10m"])
KEY = b"C000001"


def order(n: int, customer: str = "C000001") -> dict[str, Any]:
    return {"event_id": f"evt-{n}", "order_id": f"ord-{n}", "customer_id": customer,
            "placed_at": int(time.time() * 1000), "currency": "EUR", "amount_cents": 100, "channel": "web",
            "shipping_country": "DE", "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100}],
            "coupon_code": None}


class ScriptedPipeline:
    """Each event's calls answer in turn from its script: "ok", "transient" or "permanent"."""

    input_subject = ORDER_PLACED
    output_subject = ENRICHED_ORDER

    def __init__(self, scripts: dict[str, list[str]]) -> None:
        self.scripts = {event_id: list(answers) for event_id, answers in scripts.items()}
        self.calls: list[str] = []

    async def process(self, event: dict[str, Any]) -> dict[str, Any]:
        event_id = event["event_id"]
        self.calls.append(event_id)
        answer = self.scripts.get(event_id, ["ok"]).pop(0) if self.scripts.get(event_id) else "ok"
        if answer == "transient":
            raise Transient("503 from customers", status=503, api="customers")
        if answer == "permanent":
            raise Permanent("404 from customers", status=404, api="customers")
        return {**event, "customer": {"customer_id": event["customer_id"], "name": "Ada", "tier": "gold",
                                      "country": "DE", "since": "2020-01-01"},
                "enriched_at": int(time.time() * 1000), "pipeline": "strict"}


class Topics:
    """The input partition 0 and partition 0 of each tier, as lists of records; offsets are list indexes."""

    def __init__(self) -> None:
        self.input: list[InboundRecord] = []
        self.tiers: dict[str, list[InboundRecord]] = {tier.topic: [] for tier in RETRY.tiers}
        self.output: list[str] = []
        self.dlq: list[dict[str, str]] = []

    def produce_input(self, *numbers: int) -> list[InboundRecord]:
        records = [InboundRecord("orders", 0, len(self.input) + i, 0, KEY, SERDE.encode(ORDER_PLACED, order(n)))
                   for i, n in enumerate(numbers)]
        self.input += records
        return records

    def route(self, outbound: OutboundRecord | None) -> None:
        if outbound is None:
            return
        if outbound.topic in self.tiers:
            tier = self.tiers[outbound.topic]
            tier.append(InboundRecord(outbound.topic, 0, len(tier), 0, outbound.key, outbound.value,
                                      admit_headers(dict(outbound.headers), from_retry_tier=True)))
        elif outbound.failed:
            self.dlq.append({name: value.decode() for name, value in outbound.headers})
        else:
            self.output.append(outbound.event_id)

    def copies(self, committed: dict[str, int] | None = None) -> list[TierCopy]:
        """What TierScanner finds: each tier's records from ``committed`` (default 0) on."""
        found = []
        for index, tier in enumerate(RETRY.tiers):
            for record in self.tiers[tier.topic][(committed or {}).get(tier.topic, 0):]:
                copy = copy_of(index, 0, record.key, record.headers)
                assert copy is not None
                found.append(copy)
        return found


def processor(pipeline: ScriptedPipeline, parking: KeyParking | None = None) -> EventProcessor:
    return EventProcessor(pipeline, SERDE, pipeline_name="strict", output_topic="out", retry=RETRY,
                          strict_key_order=True, parking=parking)


async def run(worker: EventProcessor, topics: Topics, records: Iterable[InboundRecord]) -> None:
    for record in list(records):
        topics.route(await worker.process(record))


def scanner(copies: list[TierCopy]) -> Any:
    async def scan(partition: int) -> list[TierCopy]:
        assert partition == 0
        return copies
    return scan


# -- the state --------------------------------------------------------------------------------------


def test_the_rebuild_keeps_each_events_newest_copy_and_knows_older_ones_for_stale() -> None:
    state = PartitionParking([
        TierCopy(KEY, 10, "evt-10", 0, 1), TierCopy(KEY, 10, "evt-10", 1, 2),  # evt-10 moved on to tier 1
        TierCopy(KEY, 12, "evt-12", 0, 1), TierCopy(b"other", 11, "evt-11", 2, 3),
    ])
    assert [(e.offset, e.tier, e.hop) for e in state.keys()[KEY]] == [(10, 1, 2), (12, 0, 1)]
    assert state.is_stale(KEY, 10, 0) and state.is_stale(KEY, 10, 1)  # the input record, the tier 0 copy
    assert not state.is_stale(KEY, 10, 2) and not state.is_stale(KEY, 12, 1)
    assert not state.is_stale(KEY, 10, None)  # a record from before hops: never taken for stale
    assert state.blocker(KEY, 12) is not None and state.blocker(KEY, 12).event_id == "evt-10"  # type: ignore[union-attr]
    assert state.blocker(KEY, 10) is None  # the oldest runs
    assert state.blocker(KEY, 9) is not None  # even an older one parks behind it: only the head runs
    assert [e.event_id for e in state.behind(KEY, 10)] == ["evt-12"]


def test_a_rebuilt_event_that_finished_makes_its_older_copies_stale_but_a_new_one_does_not() -> None:
    state = PartitionParking([TierCopy(KEY, 10, "evt-10", 1, 2)])
    state.settle(KEY, 10, 2)
    assert state.is_stale(KEY, 10, 1) and state.is_stale(KEY, 10, 2) and state.is_stale(KEY, 10, 0)
    assert state.blocker(KEY, 11) is None
    state.park(KEY, 20, "evt-20", 0, 1)  # parked during the run: no stale copies can exist
    state.settle(KEY, 20, 1)
    assert not state.is_stale(KEY, 20, 0)


def test_a_tier_record_is_read_from_its_headers_and_others_are_skipped() -> None:
    headers = {Header.ORIGIN_PARTITION: b"3", Header.ORIGIN_OFFSET: b"41", Header.EVENT_ID: b"evt-41",
               Header.HOP: b"2"}
    assert copy_of(1, 3, KEY, headers) == TierCopy(KEY, 41, "evt-41", 1, 2)
    assert copy_of(1, 3, KEY, {**headers, Header.HOP: b"x"}) == TierCopy(KEY, 41, "evt-41", 1, None)
    assert copy_of(1, 4, KEY, headers) is None  # another partition's event
    assert copy_of(1, 3, None, headers) is None  # no key: never parked
    assert copy_of(1, 3, KEY, {Header.ORIGIN_PARTITION: b"3"}) is None  # not a record the pipeline wrote


async def test_concurrent_events_of_a_partition_share_one_rebuild_and_forget_rebuilds() -> None:
    scans: list[int] = []
    gate = asyncio.Event()

    async def scan(partition: int) -> list[TierCopy]:
        scans.append(partition)
        await gate.wait()
        return [TierCopy(KEY, 1, "evt-1", 0, 1)]

    parking = KeyParking(scan)
    waiting = [asyncio.create_task(parking.partition(0)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert scans == [0] and not any(task.done() for task in waiting)  # every event of partition 0 waits
    gate.set()
    states = await asyncio.gather(*waiting)
    assert all(state is states[0] for state in states) and states[0].outstanding == 1
    parking.forget()
    assert (await parking.partition(0)) is not states[0] and scans == [0, 0]


async def test_a_rebuild_that_cannot_reach_the_brokers_is_tried_again() -> None:
    failures = [KafkaConnectionError("no broker")]

    async def scan(partition: int) -> list[TierCopy]:
        if failures:
            raise failures.pop()
        return []

    state = await asyncio.wait_for(KeyParking(scan).partition(0), timeout=30)
    assert state.outstanding == 0 and failures == []


# -- the processor on it ------------------------------------------------------------------------------


async def test_a_dead_lettered_head_lets_the_events_parked_behind_it_go_on_and_says_so() -> None:
    topics = Topics()
    pipeline = ScriptedPipeline({"evt-0": ["transient", "permanent"]})
    worker = processor(pipeline)
    await run(worker, topics, topics.produce_input(0, 1, 2))
    tier = topics.tiers[RETRY.tiers[0].topic]
    assert [r.header(Header.EVENT_ID) for r in tier] == ["evt-0", "evt-1", "evt-2"]
    assert [r.header(Header.HOP) for r in tier] == ["1", "1", "1"]
    await run(worker, topics, tier)
    assert topics.output == ["evt-1", "evt-2"]
    [dead] = topics.dlq
    assert dead[Header.EVENT_ID] == "evt-0" and dead[Header.ERROR_KIND] == "permanent"
    assert dead[Header.BEHIND_COUNT] == "2" and dead[Header.BEHIND_IDS] == "evt-1,evt-2"
    assert pipeline.calls == ["evt-0", "evt-0", "evt-1", "evt-2"]  # parked events called no API until they ran


async def test_after_a_restart_mid_retry_the_key_comes_out_in_input_order_and_old_copies_are_skipped() -> None:
    """evt-0 fails twice (tier 0, then tier 1); evt-1 follows it there, parked; evt-2 is parked behind
    it in tier 1. The worker dies before any commit: the input and both tiers are delivered again,
    the tier 0 records (old copies) long before the tier 1 ones."""
    topics = Topics()
    pipeline = ScriptedPipeline({"evt-0": ["transient", "transient"]})
    first = processor(pipeline)
    await run(first, topics, topics.produce_input(0, 1))
    await run(first, topics, topics.tiers[RETRY.tiers[0].topic])  # evt-0 to tier 1, evt-1 parked behind it
    await run(first, topics, topics.produce_input(2))  # parked in tier 1 behind evt-0
    assert topics.output == []
    tier1 = topics.tiers[RETRY.tiers[1].topic]
    assert [(r.header(Header.EVENT_ID), r.header(Header.HOP)) for r in tier1] == [
        ("evt-0", "2"), ("evt-1", "2"), ("evt-2", "1")]

    restarted = processor(pipeline, KeyParking(scanner(topics.copies())))
    await run(restarted, topics, topics.input)  # every input record has a newer copy in a tier
    await run(restarted, topics, list(topics.tiers[RETRY.tiers[0].topic]))  # older copies of evt-0 and evt-1
    assert topics.output == [] and restarted.stats.stale == 5
    await run(restarted, topics, list(tier1))
    assert topics.output == ["evt-0", "evt-1", "evt-2"]
    assert pipeline.calls.count("evt-0") == 3 and pipeline.calls.count("evt-1") == 1


async def test_after_a_restart_a_later_event_back_first_from_a_short_tier_parks_behind_the_head() -> None:
    """evt-0 waits in tier 1 (hop 2); evt-1 was parked in tier 0 before evt-0 moved on. After the
    restart evt-1 comes back first: without the rebuilt state it would overtake evt-0."""
    topics = Topics()
    pipeline = ScriptedPipeline({"evt-0": ["transient", "transient"]})
    first = processor(pipeline)
    await run(first, topics, topics.produce_input(0, 1))
    tier0 = topics.tiers[RETRY.tiers[0].topic]
    await run(first, topics, tier0[:1])  # evt-0 to tier 1; evt-1 still waits in tier 0, then the crash

    restarted = processor(pipeline, KeyParking(scanner(topics.copies(committed={tier0[0].topic: 1}))))
    await run(restarted, topics, tier0[1:])
    assert topics.output == [] and restarted.stats.parked == 1
    tier1 = topics.tiers[RETRY.tiers[1].topic]
    assert [(r.header(Header.EVENT_ID), r.header(Header.PARKED_BEHIND)) for r in tier1] == [
        ("evt-0", None), ("evt-1", "evt-0")]
    await run(restarted, topics, topics.produce_input(2))  # a new event of the key: parked behind too
    await run(restarted, topics, list(tier1))
    assert topics.output == ["evt-0", "evt-1", "evt-2"]
