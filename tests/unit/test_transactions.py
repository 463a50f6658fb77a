"""The exactly-once port (streams.kafka.transactions): records wait for their event's offset, and
one transaction writes the released records with exactly those offsets."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, ProducerFenced

from streams.engine.dedupe import MARKER_HEADER
from streams.engine.records import InboundRecord, OutboundRecord
from streams.kafka.transactions import HeldRecords, NotAMember, TransactionalPort, TransactionFailed
from streams.kafka.worker import Delivery
from streams.names import Header

PROCESSED = "p.processed"


def inbound(offset: int, partition: int = 0, topic: str = "in",
            headers: dict[str, bytes] | None = None) -> InboundRecord:
    return InboundRecord(topic, partition, offset, 0, b"k", b"v", headers or {})


def outcome(source: InboundRecord, topic: str = "out", failed: bool = False, retry: bool = False) -> OutboundRecord:
    record = OutboundRecord(topic, b"k", b"value", [], f"evt-{source.partition}-{source.offset}", failed=failed,
                            retry=retry)
    record.source = source
    return record


def test_a_record_waits_until_its_offset_is_acknowledged() -> None:
    held = HeldRecords()
    five, three = outcome(inbound(5)), outcome(inbound(3))
    held.hold(five)  # event 5 done while 3 waits on its API call
    held.hold(three)
    assert held.take() == [] and held.held == 2
    held.release("in", 0, 3)
    assert held.take() == [three]
    held.release("in", 0, 4)  # filtered: nothing was produced for it
    held.release("in", 0, 5)
    assert held.take() == [five] and held.held == 0


def test_records_not_from_an_event_go_at_once_and_the_engines_markers_not_at_all() -> None:
    held = HeldRecords(PROCESSED)
    loose = OutboundRecord("elsewhere", None, b"x", [], "id")
    held.hold(loose)
    held.hold(OutboundRecord(PROCESSED, None, b'["evt"]', [(MARKER_HEADER, b"1")], "evt", partition=0))
    assert held.take() == [loose]


def test_the_processed_ids_of_released_outputs_go_in_the_same_take() -> None:
    held = HeldRecords(PROCESSED)
    output = outcome(inbound(1, partition=2))
    retried = outcome(inbound(2, partition=2), topic="p.retry.5s", retry=True)
    dead = outcome(inbound(3, partition=2), topic="p.dlq", failed=True)
    # a retry tier's record: its event's input partition is the origin header's, not the tier's
    from_tier = outcome(inbound(7, partition=2, topic="p.retry.5s", headers={Header.ORIGIN_PARTITION: b"2"}))
    for record in (output, retried, dead, from_tier):
        held.hold(record)
        assert record.source is not None
        held.release(record.source.topic, record.source.partition, record.source.offset)
    records = held.take()
    assert records[:4] == [output, retried, dead, from_tier]
    (marker,) = records[4:]
    assert marker.topic == PROCESSED and marker.partition == 2
    assert json.loads(marker.value or b"") == [output.event_id, from_tier.event_id]


def test_partitions_that_go_take_their_held_and_released_records_with_them() -> None:
    held = HeldRecords()
    kept, released, waiting = outcome(inbound(1, partition=1)), outcome(inbound(1)), outcome(inbound(2))
    for record in (kept, released, waiting):
        held.hold(record)
    held.release("in", 1, 1)
    held.release("in", 0, 1)
    held.discard({("in", 0)})
    assert held.take() == [kept] and held.held == 0


def test_a_stale_acknowledgement_drops_the_record() -> None:
    held = HeldRecords()
    held.hold(outcome(inbound(1)))
    held.drop("in", 0, 1)
    held.release("in", 0, 1)
    assert held.take() == [] and held.held == 0


class FakeProducer:
    def __init__(self, fail_on: str | None = None, error: type[Exception] = KafkaError) -> None:
        self.calls: list[Any] = []
        self.fail_on = fail_on
        self.error = error

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name == self.fail_on:
            raise self.error()

    async def begin_transaction(self) -> None:
        self._call("begin")

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        self._call("send", topic, value)
        future: Any = SimpleNamespace()
        return _done(future)

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, Any], group_id: str) -> None:
        self._call("offsets", {tp.partition: meta.offset for tp, meta in offsets.items()}, group_id)

    async def commit_transaction(self) -> None:
        self._call("commit")

    async def abort_transaction(self) -> None:
        self._call("abort")


async def _done(value: Any) -> Any:
    return value


class FakeConsumer:
    def __init__(self, committed: dict[TopicPartition, int] | None = None, member: bool = True) -> None:
        self.group = dict(committed or {})
        self.member = member
        self.probes: list[dict[int, int]] = []

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.group.get(tp)

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.probes.append({tp.partition: meta.offset for tp, meta in offsets.items()})
        if not self.member:
            raise CommitFailedError("rebalanced")

    def assignment(self) -> set[TopicPartition]:
        return set()


def port(producer: FakeProducer, consumer: FakeConsumer | None = None) -> TransactionalPort:
    return TransactionalPort(cast(Any, consumer or FakeConsumer()), cast(Any, producer), {"in"}, frozenset(),
                             group_id="g", processed_topic=None)


def delivery(offset: int, partition: int = 0, generation: int = 0) -> Delivery:
    record: Any = SimpleNamespace(topic="in", partition=partition, offset=offset)
    return Delivery(record, generation)


async def test_one_transaction_holds_the_released_records_and_exactly_their_offsets() -> None:
    producer = FakeProducer()
    tx = port(producer)
    for offset in (0, 1, 2):
        await tx.send(outcome(inbound(offset)))
    await tx.ack(delivery(0))
    await tx.ack(delivery(1))  # 2 is done but not acknowledged: an earlier event of its partition waits
    await tx.commit()
    assert producer.calls == [("begin",), ("send", "out", b"value"), ("send", "out", b"value"),
                              ("offsets", {0: 2}, "g"), ("commit",)]
    assert tx.committed == {TopicPartition("in", 0): 2} and tx.records.held == 1
    producer.calls.clear()
    await tx.commit()  # nothing new: no transaction
    assert producer.calls == []


async def test_a_failed_transaction_is_aborted_and_the_port_commits_nothing_more() -> None:
    producer = FakeProducer(fail_on="commit")
    tx = port(producer)
    await tx.send(outcome(inbound(0)))
    await tx.ack(delivery(0))
    with pytest.raises(TransactionFailed):
        await tx.commit()
    assert producer.calls[-1] == ("abort",) and tx.committed == {}
    await tx.send(outcome(inbound(1)))
    await tx.ack(delivery(1))
    producer.calls.clear()
    with pytest.raises(TransactionFailed):
        await tx.commit()
    assert producer.calls == []


async def test_a_worker_the_group_moved_on_from_writes_nothing() -> None:
    tp = TopicPartition("in", 0)
    producer, consumer = FakeProducer(), FakeConsumer({tp: 10}, member=False)
    tx = port(producer, consumer)
    await tx.send(outcome(inbound(10)))
    await tx.ack(delivery(10))
    with pytest.raises(NotAMember):
        await tx.commit()
    assert consumer.probes == [{0: 10}]  # what the group already had: a no-op for a member
    assert producer.calls == [] and tx.records.ready == 1  # nothing written, nothing lost
    tx.forget({tp})  # the rebalance that follows: the next owner redoes them
    assert tx.records.ready == 0


async def test_a_member_probes_with_the_offsets_it_committed() -> None:
    producer, consumer = FakeProducer(), FakeConsumer()
    tx = port(producer, consumer)
    await tx.ack(delivery(0))
    await tx.commit()
    assert consumer.probes == []  # nothing committed yet, nothing to probe with
    await tx.ack(delivery(1))
    await tx.commit()
    assert consumer.probes == [{0: 1}] and tx.committed == {TopicPartition("in", 0): 2}


async def test_an_acknowledgement_from_an_older_assignment_drops_its_record() -> None:
    tx = port(FakeProducer())
    tx.generation = 2
    await tx.send(outcome(inbound(0)))
    await tx.ack(delivery(0, generation=1))
    assert tx.records.held == 0 and tx.records.ready == 0


async def test_a_fenced_producer_does_not_try_to_abort() -> None:
    producer = FakeProducer(fail_on="offsets", error=ProducerFenced)
    tx = port(producer)
    await tx.ack(delivery(0))
    with pytest.raises(TransactionFailed, match="ProducerFenced"):
        await tx.commit()
    assert [call[0] for call in producer.calls] == ["begin", "offsets"]
