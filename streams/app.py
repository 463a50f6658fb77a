"""The worker: a faust-streaming app whose one agent feeds the engine.

Faust gives us the worker process, the consumer group, rebalancing, co-partitioned
assignment (a retry tier has as many partitions as the input, so partition N of each goes
to the same worker) and offset commits of what we acknowledge. Its per-event machinery stays
off the hot path: the agent takes events in batches without acknowledging them
(``noack_take``) and hands them to the ``Engine``, which acknowledges each partition's
completed prefix once the broker has the outbound records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, MutableMapping, MutableSet, Sequence
from typing import Any, Protocol, TypeVar, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP, EventT, Message, StreamT
from mode.supervisors import CrashingSupervisor

from streams.assembly import log_stats, start_processing, start_telemetry
from streams.engine.engine import Engine
from streams.engine.records import InboundRecord, OutboundRecord, headers_from_kafka
from streams.engine.retry import RetryPolicy
from streams.engine.routing import admit_headers
from streams.kafka.clients import partition_count
from streams.names import dlq_topic
from streams.pipeline import Pipeline
from streams.security import faust_credentials, kafka_security
from streams.settings import Settings, pipeline_names
from streams.telemetry import PipelineMetrics

log = logging.getLogger("streams.worker")

Event = EventT[bytes]  # the agent's topics are raw: keys and values are bytes
T = TypeVar("T")


# What the worker reaches inside Faust's aiokafka driver (faust.transport.drivers.aiokafka), which
# Faust's public ConsumerT, ProducerT and StreamT do not declare. The casts to these Protocols are in
# _consumer_internals, _producer_internals and the agent's noack().noack_take().

class _ConsumerThread(Protocol):
    """Faust's AIOKafkaConsumerThread: runs the aiokafka consumer on a loop of its own."""

    async def call_thread(self, fun: Callable[..., Awaitable[T]], *args: object) -> T: ...

    def _ensure_consumer(self) -> AIOKafkaConsumer: ...


class _ConsumerInternals(Protocol):
    """Faust's aiokafka Consumer, past its ConsumerT face."""

    _unacked_messages: MutableSet[Message]
    _thread: _ConsumerThread
    _committed_offset: MutableMapping[TP, int | None]


class _ProducerInternals(Protocol):
    """Faust's aiokafka Producer, past its ProducerT face."""

    def _ensure_producer(self) -> AIOKafkaProducer: ...


class _ManualAckStream(Protocol):
    """faust.Stream's manual-ack batching, which StreamT does not declare. noack_take yields the
    buffered events themselves, not their values as Faust's annotation says."""

    def noack(self) -> _ManualAckStream: ...

    def noack_take(self, max_: int, within: float) -> AsyncIterator[Sequence[Event]]: ...


def _consumer_internals(app: faust.App) -> _ConsumerInternals:
    return cast(_ConsumerInternals, app.consumer)  # the kafka:// transport's consumer (see above)


def _producer_internals(app: faust.App) -> _ProducerInternals:
    return cast(_ProducerInternals, app.producer)  # the kafka:// transport's producer (see above)


class PipelineApp(faust.App):
    """A Faust app that lets its engine drain before a rebalance or shutdown proceeds."""

    engine: Engine[Event] | None = None

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        if self.engine is not None:
            self.engine.begin_drain("rebalance")

    async def on_stop(self) -> None:
        if self.engine is not None:
            self.engine.begin_drain("shutdown")
        await super().on_stop()


class FaustPort:
    """The engine's view of Faust: records, produce, ack, release, pause and resume."""

    def __init__(self, app: faust.App, stream: StreamT[bytes], topics: set[str],
                 retry_topics: frozenset[str] = frozenset()) -> None:
        self._app = app
        self._stream = stream
        self._topics = topics
        self._fenced_generation: int | None = None
        self._retry_topics = retry_topics  # only their records may carry hop headers (admit_headers)

    def record_of(self, handle: Event) -> InboundRecord:
        message = handle.message
        return InboundRecord(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(message.timestamp * 1000),
            key=message.key,
            value=message.value,
            headers=admit_headers(headers_from_kafka(message.headers),
                                  from_retry_tier=message.topic in self._retry_topics),
        )

    def partition_of(self, handle: Event) -> Hashable:
        message = handle.message
        return TP(message.topic, message.partition)  # Faust's own type: pause/resume insist on it

    def is_stale(self, handle: Event) -> bool:
        # Events Faust hands over between the start of a rebalance and the new assignment still
        # carry the old generation, which is current until the assignment: processing them
        # would put acks beyond the committed offset into the new generation, and Faust commits
        # from the first ack it holds, skipping what lies between. Faust delivers them again.
        generation = handle.message.generation_id
        if generation is None:
            return False
        fenced = self._fenced_generation is not None and generation <= self._fenced_generation
        return fenced or generation != self._app.consumer_generation_id

    def fence(self) -> None:
        self._fenced_generation = self._app.consumer_generation_id

    async def send(self, record: OutboundRecord) -> Awaitable[Any]:
        return await self._app.producer.send(
            record.topic, record.key, record.value, record.partition, None, record.headers
        )

    async def ack(self, handle: Event) -> None:
        await self._stream.ack(handle)

    def release(self, handle: Event) -> None:
        # Never acknowledged, so never committed: Faust delivers it again after the rebalance
        # or restart. Faust's drain waits for delivered messages until they are acked or gone.
        _consumer_internals(self._app)._unacked_messages.discard(handle.message)

    def assigned(self) -> list[Hashable]:
        """The assigned partitions of the agent's topics (input and retry tiers)."""
        return [TP(tp.topic, tp.partition) for tp in self._app.consumer.assignment() if tp.topic in self._topics]

    # Pausing goes to the aiokafka consumer itself, on Faust's consumer thread: it stops fetching
    # the partition and drops what it fetched but had not returned, to fetch it again on resume.
    # Faust's own pause_partitions is not used: its fetch loop silently skips records of a
    # partition paused while it iterates a fetched batch, and later treats the skipped offsets
    # as a gap it may commit past -- a loss.
    def pause(self, partition: Hashable) -> None:
        self._in_consumer_thread(self._pause_fetching, partition)

    def resume(self, partition: Hashable) -> None:
        self._in_consumer_thread(self._resume_fetching, partition)

    def _in_consumer_thread(self, action: Callable[[TopicPartition], Awaitable[None]], partition: Hashable) -> None:
        tp = cast(TP, partition)
        thread = _consumer_internals(self._app)._thread
        task = asyncio.ensure_future(thread.call_thread(action, TopicPartition(tp.topic, tp.partition)))
        task.add_done_callback(_log_pause_failure)

    async def _pause_fetching(self, tp: TopicPartition) -> None:  # on the consumer thread's loop
        consumer = _consumer_internals(self._app)._thread._ensure_consumer()
        if tp in consumer.assignment():
            consumer.pause(tp)

    async def _resume_fetching(self, tp: TopicPartition) -> None:  # on the consumer thread's loop
        consumer = _consumer_internals(self._app)._thread._ensure_consumer()
        if tp in consumer.assignment():
            consumer.resume(tp)


def _log_pause_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("could not pause or resume a partition: %r", task.exception())


class UnsupportedGuarantee(ValueError):
    """A setting this runtime cannot honour (STREAMS_GUARANTEE=exactly-once)."""


def create_app(settings: Settings, pipeline: Pipeline, metrics: PipelineMetrics | None = None) -> PipelineApp:
    """Build the worker app for one pipeline (``settings`` from ``streams.loader.for_pipeline``,
    its APIs bound by ``bind_pipeline``); ``metrics`` are served on the telemetry port.

    Raises ``UnsupportedGuarantee`` for ``STREAMS_GUARANTEE=exactly-once``: Faust owns the
    producer and commits offsets itself, outside any transaction of ours."""
    if settings.guarantee != "at-least-once":
        raise UnsupportedGuarantee(
            f"STREAMS_GUARANTEE={settings.guarantee} needs the aiokafka runtime (STREAMS_RUNTIME=aiokafka, the "
            "default): the Faust runtime's producer and offset commits belong to Faust, which cannot put them in "
            "one Kafka transaction. Unset STREAMS_RUNTIME, or use STREAMS_GUARANTEE=at-least-once "
            "(docs/exactly-once.md).")
    names = pipeline_names(settings)
    app = PipelineApp(
        names.pipeline,
        broker=";".join(f"kafka://{server}" for server in settings.bootstrap_list),
        broker_credentials=faust_credentials(settings),  # TLS / SASL per settings (streams.security)
        datadir=str(settings.data_dir),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_acks=-1,
        producer_request_timeout=settings.producer_timeout,
        stream_buffer_maxsize=max(4096, settings.batch_size * 4),
        stream_wait_empty=True,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
    )
    retry = RetryPolicy(names.pipeline, settings.retry_delay_list)
    source = app.topic(names.input_topic, *retry.topics, key_serializer="raw", value_serializer="raw")
    async def enrich(stream: StreamT[bytes]) -> None:
        port = FaustPort(app, stream, {names.input_topic, *retry.topics}, frozenset(retry.topics))
        engine, processor = await start_processing(settings, pipeline, retry, port, metrics)
        app.engine = engine

        total_input = await partition_count(settings.kafka_bootstrap_servers, names.input_topic,
                                            security=kafka_security(settings))

        async def share_rate_limits(assigned: set[TP]) -> None:
            total = app.consumer.topic_partitions(names.input_topic) or total_input
            owned = sum(1 for tp in assigned if tp.topic == names.input_topic)
            if total:
                pipeline.on_assignment(owned, total)
                log.info("owning %d of %d partitions of %s", owned, total, names.input_topic)

        async def on_partitions_assigned(sender: object, /, *args: set[TP], **_: object) -> None:
            await share_rate_limits(*args)  # mode's signal handler; Faust sends (app, assigned, signal=...)

        app.on_partitions_assigned.connect(on_partitions_assigned)
        assignment = app.consumer.assignment()
        if assignment:  # assigned before the agent started
            await share_rate_limits(set(assignment))
        telemetry = await start_telemetry(settings, engine, metrics, assigned=app.consumer.assignment,
                                          broker_reachable=lambda: _broker_reachable(app),
                                          lag=lambda: _consumer_lag(app))
        log.info("pipeline %s: %s -> %s, retry tiers %s, dead letters to %s", names.pipeline,
                 names.input_topic, names.output_topic, retry.topics, dlq_topic(names.pipeline))
        crashed = False
        try:
            # noack(): Faust must never acknowledge on its own. noack_take restores the stream's
            # ack setting when it ends, and Faust's passive drainer may go on iterating the
            # stream while a crashed worker stops: with acks on, it would ack (and commit)
            # events nobody processed.
            manual = cast(_ManualAckStream, stream)  # the agent's stream is a faust.Stream (see _ManualAckStream)
            async for events in manual.noack().noack_take(settings.batch_size, within=settings.batch_linger):
                await engine.submit(events)  # noack_take yields the events themselves
        except asyncio.CancelledError:
            crashed = True
            if engine.error is not None:  # the engine interrupted us: a produce failed (Engine._fail)
                raise engine.error from None  # a crash with its reason (CrashingSupervisor), not a cancel
            raise
        except BaseException:
            crashed = True  # the worker stops (CrashingSupervisor); uncommitted events come again
            raise
        finally:
            await engine.close(settle_timeout=0 if crashed else settings.drain_deadline)
            log_stats(log, processor, engine)
            app.engine = None
            if telemetry is not None:
                await telemetry.stop()
            await pipeline.close()

    # An unexpected error in the agent stops the worker instead of restarting the agent in
    # place: a restarted agent would never see again the events the old one held.
    app.agent(source, name=f"{names.pipeline}.enrich", supervisor_strategy=CrashingSupervisor)(enrich)
    return app


async def _broker_reachable(app: PipelineApp) -> tuple[bool, str]:
    try:
        client = _producer_internals(app)._ensure_producer().client
        await asyncio.wait_for(client.fetch_all_metadata(), 2.0)
    except Exception as exc:  # noqa: BLE001 - any failure means not reachable; say which
        return False, f"{type(exc).__name__}: {exc}"
    return True, "metadata fetched"


def _consumer_lag(app: PipelineApp) -> dict[tuple[str, int], int]:
    """Records behind per assigned partition: the high watermark minus the committed offset."""
    consumer = app.consumer
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet
            continue
        committed = _consumer_internals(app)._committed_offset.get(tp) or 0
        lag[(tp.topic, tp.partition)] = max(0, highwater - committed)
    return lag
