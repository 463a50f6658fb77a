"""Exactly-once to Kafka (``STREAMS_GUARANTEE=exactly-once``): the aiokafka runtime's transactional port.

    port = TransactionalPort(consumer, producer, topics, retry_topics, group_id=..., processed_topic=...)

The engine sees the same ``KafkaPort`` as in the default mode; what differs is when its records
reach Kafka (docs/exactly-once.md):

- ``send`` produces nothing: it holds the record under the input offset it is the outcome of
  (``OutboundRecord.source``) and answers "delivered" at once, so the engine goes on to
  acknowledge the partition's completed prefix as usual. Events complete out of order (5 done
  while 3 waits on its API call): 5's record stays held until 3 is done and the engine
  acknowledges 3, 4 and 5.
- ``ack`` releases the held record of that offset: it goes into the next transaction, with
  the partition's next offset to commit.
- ``commit`` (every ``STREAMS_COMMIT_INTERVAL`` seconds, when partitions are revoked and at
  shutdown) writes ONE transaction: every released record (outputs, retry records, dead
  letters, the processed-ids markers of the outputs) and, with ``send_offsets_to_transaction``,
  the input offsets of exactly those events. No record of an event whose offset is not in the
  same transaction (or an earlier one) is ever in it, so a read_committed consumer sees each
  event's result once: a crash before the commit aborts both, and the events come again.
- A transaction that fails is aborted; the port refuses every later commit (what it had released
  is gone with the aborted transaction while its offsets are still acknowledged) and the worker
  stops: a restart reads the events again from the last committed offsets.
- Before each transaction the port re-commits, with the consumer, offsets the group already has:
  a no-op for a member of the current generation, ``CommitFailedError`` for one the group has
  moved on from. aiokafka's ``send_offsets_to_transaction(offsets, group_id)`` carries no group
  generation (no KIP-447 fencing), so without this a worker that stalled past its session
  timeout could still commit a transaction for partitions another worker now owns.

The engine's own processed-ids markers (``streams.engine.dedupe.ProcessedMarkers``) are written
when an output is delivered, which here is before its event is acknowledged; this port drops
them and writes the markers of released outputs in the transaction itself instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from streams.engine.dedupe import MARKER_BATCH, marker
from streams.engine.records import OutboundRecord
from streams.engine.routing import origin_partition
from streams.kafka.worker import AIOKafkaPort, Delivery

log = logging.getLogger("streams.worker")

TRANSACTION_TIMEOUT_MS = 30_000  # the broker aborts a transaction left open (a killed worker's) after this


def transactional_id(pipeline: str, configured: str | None) -> str:
    """``STREAMS_TRANSACTIONAL_ID``, else a fresh one for this start of the worker."""
    if configured:
        return configured
    return f"{pipeline}.eos.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"


class TransactionFailed(RuntimeError):
    """A transaction was aborted (or could not be): nothing of it is visible; the worker stops."""


class NotAMember(RuntimeError):
    """The group moved on from this worker's generation: it must not commit for its partitions."""


class HeldRecords:
    """Outbound records held until the input offset they come from is acknowledged.

        held.hold(record)                         # record.source: the consumed record
        held.release("orders", 3, 41)             # acknowledged: into the next transaction
        records = held.take()                     # what the next transaction writes
    """

    def __init__(self, processed_topic: str | None = None) -> None:
        self._processed_topic = processed_topic  # None: no processed-ids markers (STREAMS_DEDUPE=off)
        self._held: dict[tuple[str, int], dict[int, OutboundRecord]] = {}
        self._ready: list[OutboundRecord] = []

    @property
    def held(self) -> int:
        return sum(len(records) for records in self._held.values())

    @property
    def ready(self) -> int:
        return len(self._ready)

    def hold(self, record: OutboundRecord) -> None:
        source = record.source
        if source is None:
            if record.topic == self._processed_topic:
                return  # the engine's markers: written here, in the transaction of their outputs
            self._ready.append(record)  # not an event's outcome: nothing to wait for
            return
        self._held.setdefault((source.topic, source.partition), {})[source.offset] = record

    def release(self, topic: str, partition: int, offset: int) -> None:
        """The engine acknowledged this offset: its record (if any) goes into the next transaction."""
        records = self._held.get((topic, partition))
        record = records.pop(offset, None) if records else None
        if record is None:
            return  # dropped or filtered: nothing was produced
        self._ready.append(record)

    def drop(self, topic: str, partition: int, offset: int) -> None:
        """An offset that will not be committed (a stale acknowledgement): its record never goes out."""
        records = self._held.get((topic, partition))
        if records:
            records.pop(offset, None)

    def discard(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions that went: their records, held or released but not committed, belong to
        events the next owner processes again."""
        for tp in partitions:
            self._held.pop(tp, None)
        self._ready = [r for r in self._ready if r.source is None or (r.source.topic, r.source.partition)
                       not in partitions]

    def take(self) -> list[OutboundRecord]:
        """The released records, in the order they were released, and one processed-ids marker
        per input partition (or more, ``MARKER_BATCH`` ids each); afterwards none are ready."""
        records, self._ready = self._ready, []
        if self._processed_topic is not None:
            processed: dict[int, list[str]] = {}  # event ids of the outputs, by input partition
            for record in records:
                if record.source is not None and not (record.failed or record.retry):
                    processed.setdefault(origin_partition(record.source), []).append(record.event_id)
            for partition, ids in processed.items():
                for start in range(0, len(ids), MARKER_BATCH):
                    chunk = ids[start:start + MARKER_BATCH]
                    value, headers = marker(chunk)
                    records.append(OutboundRecord(self._processed_topic, None, value, headers, chunk[0],
                                                  partition=partition))
        return records


class TransactionalPort(AIOKafkaPort):
    """``AIOKafkaPort`` whose records and offsets go out together, one transaction per commit."""

    def __init__(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topics: set[str],
                 retry_topics: frozenset[str], *, group_id: str, processed_topic: str | None) -> None:
        super().__init__(consumer, producer, topics, retry_topics)
        self._group_id = group_id
        self.records = HeldRecords(processed_topic)
        self._lock = asyncio.Lock()  # one transaction at a time (the committer's, a rebalance's, the last)
        self.failed: TransactionFailed | None = None
        self.transactions = 0

    async def send(self, record: OutboundRecord) -> Awaitable[Any]:
        self.records.hold(record)
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)  # "delivered" to the port; Kafka has it when the transaction commits
        return delivered

    async def ack(self, handle: Delivery) -> None:
        record = handle.record
        if handle.generation == self.generation:
            self._to_commit[TopicPartition(record.topic, record.partition)] = record.offset + 1
            self.records.release(record.topic, record.partition, record.offset)
        else:
            self.records.drop(record.topic, record.partition, record.offset)

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """One transaction: every released record and every acknowledged offset not committed yet,
        of all partitions (``partitions`` is ignored: a record may only go with its offset, and
        every record released so far goes now). Raises ``NotAMember`` (nothing written, nothing
        lost: the records stay for a later try) or ``TransactionFailed`` (aborted; the port is
        done)."""
        async with self._lock:
            if self.failed is not None:
                raise self.failed
            if not self.records.ready and all(self.committed.get(tp) == o for tp, o in self._to_commit.items()):
                return
            await self._still_a_member()
            # From here on no await until the transaction begins: the records and the offsets
            # are taken together, each record with the offset of its event.
            records = self.records.take()
            due = {tp: offset for tp, offset in self._to_commit.items() if self.committed.get(tp) != offset}
            try:
                await self.producer.begin_transaction()
                sent = [await self.producer.send(r.topic, r.value, key=r.key, partition=r.partition,
                                                 headers=r.headers) for r in records]
                if due:
                    await self.producer.send_offsets_to_transaction(
                        {tp: OffsetAndMetadata(offset, "") for tp, offset in due.items()}, self._group_id)
                await asyncio.gather(*sent)  # a failed send fails the transaction before it commits
                await self.producer.commit_transaction()
            except BaseException as exc:
                self.failed = TransactionFailed(f"a transaction of {len(records)} records and {len(due)} offsets "
                                                f"failed: {type(exc).__name__}: {exc}")
                if not isinstance(exc, ProducerFenced):  # a fenced producer can abort nothing; its successor did
                    await self._abort()
                raise self.failed from exc
            self.committed.update(due)
            self.transactions += 1

    async def _still_a_member(self) -> None:
        """Re-commit offsets the group already has: only a member of its current generation may."""
        probe: dict[TopicPartition, int] = {}
        for tp in list(self._to_commit):  # acknowledgements go on while this awaits
            if tp not in self.committed:
                try:
                    known = await self.consumer.committed(tp)
                except Exception:  # noqa: BLE001 - not assigned any more, or the fetch failed: not a probe
                    continue
                if known is None:
                    continue
                self.committed[tp] = known
            probe[tp] = self.committed[tp]
        if not probe:
            return  # nothing committed yet (a fresh group): nothing to probe with
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in probe.items()})
        except Exception as exc:  # any failure: not known to be a member, commit nothing
            raise NotAMember(f"{type(exc).__name__}: {exc}") from exc

    async def _abort(self) -> None:
        try:
            await asyncio.shield(self.producer.abort_transaction())
        except Exception as exc:  # noqa: BLE001 - fenced, or the broker gone: it aborts on its own (timeout)
            log.warning("aborting the failed transaction failed too (%s: %s); the broker aborts it after %d s",
                        type(exc).__name__, exc, TRANSACTION_TIMEOUT_MS // 1000)

    def forget(self, partitions: set[TopicPartition]) -> None:
        super().forget(partitions)
        self.records.discard({(tp.topic, tp.partition) for tp in partitions})
