"""The worker's own Kafka runtime: one aiokafka consumer and one idempotent producer around the engine.

    await run_worker(settings, pipeline, metrics)      # until SIGTERM/SIGINT, or a produce fails

The engine needs records, produce, acknowledge, release, pause and resume (``KafkaPort``);
here they are aiokafka's public API and nothing else:

- consume: ``getmany`` batches from the input and every retry tier, one consumer in the group
  named after the pipeline. The range assignor gives partition N of each topic to the same
  member, as the tiers have as many partitions as the input: the worker that owns a key owns
  its retries too.
- acknowledge: the engine acknowledges each partition's completed prefix in offset order; the
  port remembers the next offset to commit, and ``commit`` sends them every
  ``STREAMS_COMMIT_INTERVAL`` seconds, when partitions are revoked and at shutdown. Nothing
  past unfinished work is ever committed, whatever the gaps.
- rebalance: ``on_partitions_revoked`` drains the engine (stop starting work, give up what is
  queued, let what runs finish within ``STREAMS_DRAIN_DEADLINE``), commits, and only then lets
  the group move the partitions. Events fetched under the old assignment are released; after
  the assignment the consumer starts again from the committed offsets.
- release: an event not acknowledged is never committed; the consumer reads it again after the
  next assignment or restart.
- pause and resume: the consumer's own, per partition (retry tiers whose head is not due, an open
  circuit).
- produce: one idempotent producer (acks=all), linger and batch size from the settings.
- exactly-once (``STREAMS_GUARANTEE=exactly-once``): the producer is transactional and the port
  is ``streams.kafka.transactions.TransactionalPort``: records wait for their event's offset, and
  each ``commit`` is one transaction of records and offsets (docs/exactly-once.md). A transaction
  that fails stops the worker, like a failed produce in the default mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import OffsetAndMetadata

from streams.assembly import log_stats, start_processing, start_telemetry
from streams.engine.engine import Engine
from streams.engine.processor import EventProcessor
from streams.engine.records import InboundRecord, OutboundRecord, headers_from_kafka
from streams.engine.retry import RetryPolicy
from streams.engine.routing import admit_headers
from streams.names import dlq_topic, processed_topic
from streams.pipeline import Pipeline
from streams.security import kafka_security
from streams.settings import Settings, pipeline_names
from streams.telemetry import PipelineMetrics

log = logging.getLogger("streams.worker")


@dataclass(slots=True, frozen=True)
class Delivery:
    """A consumed record and the assignment generation it was fetched under."""

    record: ConsumerRecord[bytes, bytes]
    generation: int


class AIOKafkaPort:
    """The engine's view of the consumer and producer (``streams.engine.engine.KafkaPort``)."""

    def __init__(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topics: set[str],
                 retry_topics: frozenset[str]) -> None:
        self.consumer = consumer
        self.producer = producer
        self._topics = topics
        self._retry_topics = retry_topics  # only their records may carry hop headers (admit_headers)
        self.generation = 0  # +1 per assignment
        self._fenced = -1  # deliveries of this generation or older are stale
        self._to_commit: dict[TopicPartition, int] = {}  # the next offset to commit, per partition
        self.committed: dict[TopicPartition, int] = {}  # what the group has, as far as we committed it

    def record_of(self, handle: Delivery) -> InboundRecord:
        record = handle.record
        return InboundRecord(
            topic=record.topic, partition=record.partition, offset=record.offset, timestamp_ms=record.timestamp,
            key=record.key, value=record.value,
            headers=admit_headers(headers_from_kafka(record.headers),
                                  from_retry_tier=record.topic in self._retry_topics),
        )

    def partition_of(self, handle: Delivery) -> Hashable:
        tp: Hashable = TopicPartition(handle.record.topic, handle.record.partition)  # aiokafka is untyped
        return tp

    def is_stale(self, handle: Delivery) -> bool:
        return handle.generation <= self._fenced

    def fence(self) -> None:
        self._fenced = self.generation

    async def send(self, record: OutboundRecord) -> Awaitable[Any]:
        delivered: Awaitable[Any] = await self.producer.send(  # aiokafka is untyped: the broker's ack to come
            record.topic, record.value, key=record.key, partition=record.partition, headers=record.headers)
        return delivered

    async def ack(self, handle: Delivery) -> None:
        record = handle.record
        if handle.generation == self.generation:  # the engine acks in offset order, per partition
            self._to_commit[TopicPartition(record.topic, record.partition)] = record.offset + 1

    def release(self, handle: Delivery) -> None:
        """Not acknowledged, so not committed: read again after the next assignment or restart."""

    def assigned(self) -> list[Hashable]:
        return [tp for tp in self.consumer.assignment() if tp.topic in self._topics]

    def pause(self, partition: Hashable) -> None:  # partition_of's and assigned()'s TopicPartitions
        if partition in self.consumer.assignment():  # it may have gone in a rebalance meanwhile
            self.consumer.pause(partition)

    def resume(self, partition: Hashable) -> None:
        if partition in self.consumer.assignment():
            self.consumer.resume(partition)

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit the acknowledged prefix of ``partitions`` (default: every assigned one) that is
        not committed yet. While partitions are being revoked, pass them: ``assignment()`` may
        already be empty then."""
        owned = partitions if partitions is not None else self.consumer.assignment()
        due = {tp: offset for tp, offset in self._to_commit.items()
               if tp in owned and self.committed.get(tp) != offset}
        if not due:
            return
        await self.consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in due.items()})
        self.committed.update(due)

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._to_commit.pop(tp, None)
            self.committed.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drain and commit before partitions go; share the rate limits when they come."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.assigned(assigned)


class _Worker:
    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: PipelineMetrics | None) -> None:
        self.names = names = pipeline_names(settings)  # settings from loader.for_pipeline
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.retry = RetryPolicy(names.pipeline, settings.retry_delay_list)
        security = kafka_security(settings)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=names.pipeline,
            enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout / 3) * 1000),
            max_poll_records=settings.batch_size, **security)
        self.exactly_once = settings.guarantee == "exactly-once"
        transactional: dict[str, Any] = {}
        if self.exactly_once:
            from streams.kafka import transactions

            transactional = {"transactional_id": transactions.transactional_id(names.pipeline,
                                                                              settings.transactional_id),
                             "transaction_timeout_ms": transactions.TRANSACTION_TIMEOUT_MS}
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True,
            linger_ms=settings.producer_linger_ms, max_batch_size=settings.producer_batch_bytes,
            request_timeout_ms=int(settings.producer_timeout * 1000), **transactional, **security)
        topics = {names.input_topic, *self.retry.topics}
        self.port: AIOKafkaPort
        if self.exactly_once:
            self.port = transactions.TransactionalPort(
                self.consumer, self.producer, topics, frozenset(self.retry.topics), group_id=names.pipeline,
                processed_topic=None if settings.dedupe == "off" else processed_topic(pipeline.name))
        else:
            self.port = AIOKafkaPort(self.consumer, self.producer, topics, frozenset(self.retry.topics))
        self.failure: BaseException | None = None  # a transaction failed: the worker stops (exactly-once)
        self._main: asyncio.Task[Any] | None = None
        self.engine: Engine[Delivery] | None = None
        self.processor: EventProcessor | None = None

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        engine = self.engine
        if engine is None or not revoked:
            return
        engine.begin_drain("rebalance")
        await engine.drained()
        try:
            await self.port.commit(revoked)
        except Exception as exc:  # noqa: BLE001 - the next owner redoes what was not committed
            self._stop_if_broken()
            log.warning("commit before handing over %d partitions failed: %s: %s (their uncommitted events are "
                        "processed again by the next owner)", len(revoked), type(exc).__name__, exc)
        self.port.forget(revoked)

    def assigned(self, assigned: set[TopicPartition]) -> None:
        self.port.generation += 1
        total = len(self.consumer.partitions_for_topic(self.names.input_topic) or ())
        owned = sum(1 for tp in assigned if tp.topic == self.names.input_topic)
        if total:
            self.pipeline.on_assignment(owned, total)
        log.info("owning %d of %d partitions of %s (%d partitions in all, generation %d)", owned, total,
                 self.names.input_topic, len(assigned), self.port.generation)

    async def run(self) -> None:
        settings, pipeline = self.settings, self.pipeline
        self.engine, self.processor = await start_processing(settings, pipeline, self.retry, self.port, self.metrics)
        engine = self.engine
        self._main = asyncio.current_task()
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.names.input_topic, *self.retry.topics], listener=_Rebalance(self))
        telemetry = await start_telemetry(settings, engine, self.metrics, assigned=self.consumer.assignment,
                                          broker_reachable=self._broker_reachable, lag=self._lag)
        committer = asyncio.create_task(self._commit_every(settings.commit_interval), name="commits")
        log.info("pipeline %s: %s -> %s, retry tiers %s, dead letters to %s (runtime aiokafka, %s)", pipeline.name,
                 pipeline.source, pipeline.sink, self.retry.topics, dlq_topic(pipeline.name), settings.guarantee)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        crashed = False
        try:
            await self._consume(stopping)
        except BaseException:
            crashed = True  # the worker stops (non-zero exit); what it did not commit comes again
            raise
        finally:
            if not crashed:
                engine.begin_drain("shutdown")
            await engine.close(settle_timeout=0 if crashed else settings.drain_deadline)
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            if engine.error is None and self.failure is None:
                with contextlib.suppress(Exception):
                    await self.port.commit()
            if self.processor is not None:
                log_stats(log, self.processor, engine)
            self.engine = None  # leaving the group below revokes nothing of the engine's any more
            if telemetry is not None:
                await telemetry.stop()
            await pipeline.close()
            await self.consumer.stop()
            await self.producer.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _consume(self, stopping: asyncio.Event) -> None:
        engine = self.engine
        assert engine is not None
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                fetch = asyncio.ensure_future(self.consumer.getmany(
                    timeout_ms=int(self.settings.batch_linger * 1000) or 1, max_records=self.settings.batch_size))
                done, _ = await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
                if fetch not in done:
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fetch
                    break
                generation = self.port.generation
                batch = fetch.result()
                try:
                    await engine.submit(Delivery(record, generation)
                                        for records in batch.values() for record in records)
                except asyncio.CancelledError:
                    if engine.error is not None:  # the engine interrupted us: a produce failed (Engine._fail)
                        raise engine.error from None
                    if self.failure is not None:  # a transaction failed (_stop_if_broken)
                        raise self.failure from None
                    raise
        except asyncio.CancelledError:
            if self.failure is not None:  # interrupted while fetching
                raise self.failure from None
            raise
        finally:
            stop.cancel()

    async def _commit_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if self.exactly_once:  # a transaction is not cut short by the shutdown: the last one waits for it
                    await asyncio.shield(self.port.commit())
                else:
                    await self.port.commit()
            except Exception as exc:  # noqa: BLE001 - retried at the next interval; a rebalance commits too
                if self._stop_if_broken():
                    return
                log.warning("offset commit failed (retried in %.0f s): %s: %s", interval, type(exc).__name__, exc)

    def _stop_if_broken(self) -> bool:
        """Exactly-once: after a failed transaction the port commits nothing more; stop the worker.
        True when it stops."""
        failed = getattr(self.port, "failed", None)
        if failed is None:
            return False
        if self.failure is not None:
            return True
        self.failure = failed
        log.error("%s; stopping: a restart processes the events of the aborted transaction again", failed)
        if self._main is not None and not self._main.done():
            self._main.cancel("a transaction failed")
        return True

    async def _broker_reachable(self) -> tuple[bool, str]:
        try:
            await asyncio.wait_for(self.consumer.topics(), 2.0)  # a metadata request to the cluster
        except Exception as exc:  # noqa: BLE001 - any failure means not reachable; say which
            return False, f"{type(exc).__name__}: {exc}"
        return True, "metadata fetched"

    def _lag(self) -> dict[tuple[str, int], int]:
        """Records behind per assigned partition: the high watermark minus the committed offset."""
        lag: dict[tuple[str, int], int] = {}
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            lag[(tp.topic, tp.partition)] = max(0, highwater - self.port.committed.get(tp, 0))
        return lag


async def run_worker(settings: Settings, pipeline: Pipeline, metrics: PipelineMetrics | None = None) -> None:
    """Run one worker of ``pipeline`` until SIGTERM or SIGINT (drain, commit, leave the group), or
    until producing fails (raises: nothing is committed past the event that failed)."""
    await _Worker(settings, pipeline, metrics).run()
