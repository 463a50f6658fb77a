"""The engine: everything between the consumer and the producer, for one worker.

    engine = Engine(processor, port, max_in_flight=256, max_buffered=5000, drain_deadline=20)
    await engine.start()
    await engine.submit(events)        # from the agent, batch by batch; waits when full

For each delivered event, in order: track its offset; hold it if it is a retry record that
is not due (its partition pauses); queue it in its key's lane; a pool worker runs it through
the ``EventProcessor``; the outbound record is produced; when the broker acknowledges it,
the partition's completed prefix is acknowledged to Faust, which commits it. A rebalance or
shutdown drains: queued and held events are given up (delivered again later), in-flight ones
get ``drain_deadline`` seconds to finish; on shutdown so do queued events behind a started one
of their partition, so that the commit reaches all finished work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Hashable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from streams.engine.dedupe import ProcessedIds, ProcessedMarkers
from streams.engine.delays import DelayGate
from streams.engine.offsets import OffsetTracker, Tracked
from streams.engine.pausing import BreakerPauses
from streams.engine.processor import BreakerOpen, EventProcessor
from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.routing import origin_partition
from streams.engine.scheduler import KeyedScheduler
from streams.names import Header
from streams.telemetry import (
    PipelineMetrics,
    bind_event,
    consume_span,
    inject_headers,
    produce_span,
    set_event_outcome,
)

log = logging.getLogger("streams.engine")

H = TypeVar("H")
H_contra = TypeVar("H_contra", contravariant=True)  # the port only takes handles


class KafkaPort(Protocol[H_contra]):
    """What the engine needs from the Kafka client around it (Faust in the worker)."""

    def record_of(self, handle: H_contra) -> InboundRecord: ...

    def is_stale(self, handle: H_contra) -> bool: ...

    def fence(self) -> None:
        """A rebalance began: events delivered from now on under the old assignment are stale."""
        ...

    async def send(self, record: OutboundRecord) -> Awaitable[Any]: ...

    async def ack(self, handle: H_contra) -> None: ...

    def release(self, handle: H_contra) -> None: ...

    def pause(self, partition: Hashable) -> None: ...

    def resume(self, partition: Hashable) -> None: ...

    def partition_of(self, handle: H_contra) -> Hashable: ...

    def assigned(self) -> list[Hashable]: ...


class EngineStopped(RuntimeError):
    """A produce failed; the engine stopped acknowledging so nothing is committed past it."""


@dataclass(slots=True, eq=False)
class _Job(Generic[H]):
    handle: H
    record: InboundRecord
    tracked: Tracked[H]
    generation: int


class Engine(Generic[H]):
    def __init__(
        self,
        processor: EventProcessor,
        port: KafkaPort[H],
        *,
        max_in_flight: int,
        max_buffered: int,
        drain_deadline: float,
        processed_ids: ProcessedIds | None = None,
        pipeline: str = "pipeline",
        metrics: PipelineMetrics | None = None,
        ordered: bool = True,
    ) -> None:
        self.processor = processor
        self._lane = _lane if ordered else _own_lane
        self._pipeline = pipeline
        self._metrics = metrics
        if metrics is not None:
            processor.on_duplicate = lambda: metrics.duplicate_detected("processed-ids")
            processor.on_filtered = metrics.event_filtered
        self._processed = processed_ids if processed_ids is not None and processed_ids.enabled else None
        self._port = port
        self._tracker: OffsetTracker[H] = OffsetTracker()
        self._scheduler: KeyedScheduler[_Job[H]] = KeyedScheduler(
            self._run, concurrency=max_in_flight, capacity=max(max_buffered, max_in_flight)
        )
        self._gate: DelayGate[_Job[H]] = DelayGate(self._release_held, port.pause, port.resume)
        self._acks: asyncio.Queue[list[H]] = asyncio.Queue()
        self._ack_task: asyncio.Task[None] | None = None
        self._unsettled: set[_Job[H]] = set()
        self._drain_deadline = drain_deadline
        self._drain_task: asyncio.Task[None] | None = None
        self._breaker_pauses = BreakerPauses(port, held=lambda: self._gate.paused_partitions)
        self.generation = 0
        self._stopping = False  # a shutdown drain began: every event delivered from now on is released
        self.error: BaseException | None = None
        self._feeder: asyncio.Task[Any] | None = None
        self.acked = 0
        self.released = 0
        self._markers = ProcessedMarkers(self._processed, port.send) if self._processed is not None else None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        # The task that starts the engine is the one that feeds it (the agent): _fail wakes it.
        self._feeder = asyncio.current_task()
        self._scheduler.start()
        if self._ack_task is None:
            self._ack_task = asyncio.create_task(self._ack_loop(), name="engine-acks")

    async def stop(self) -> None:
        await self._scheduler.stop()
        for task in (self._ack_task, self._drain_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ack_task = self._drain_task = None

    @property
    def in_flight(self) -> int:
        return self._scheduler.running

    @property
    def peak_in_flight(self) -> int:
        return self._scheduler.peak_running

    @property
    def held(self) -> int:
        return self._gate.held

    def assigned(self) -> list[Hashable]:
        """The partitions the port says this worker consumes (input and retry tiers)."""
        return self._port.assigned()

    def held_partitions(self) -> dict[Hashable, tuple[int, float]]:
        """Retry-tier partitions held back: records held and the head's due time (epoch seconds)."""
        return self._gate.heads()

    def paused_partitions(self) -> dict[Hashable, str]:
        """Every partition the engine paused, and why."""
        paused = {tp: f"circuit of {connector} open" for tp, connector in self._breaker_pauses.paused.items()}
        for tp in self._gate.paused_partitions:
            paused.setdefault(tp, "retry records not due yet")
        return paused

    def overdue_partitions(self, slack: float) -> list[Hashable]:
        """Held retry partitions whose head record is due for more than ``slack`` seconds."""
        return self._gate.overdue(slack)

    # -- consume ---------------------------------------------------------------------------

    async def submit(self, handles: Iterable[H]) -> None:
        """Take delivered events in offset order; waits while the buffer is full."""
        generation = self.generation
        for handle in handles:
            self._raise_if_failed()
            if generation != self.generation or self._stopping or self._port.is_stale(handle):
                self._port.release(handle)  # a rebalance happened: Faust delivers it again
                self.released += 1
                continue
            record = self._port.record_of(handle)
            if self._processed is not None:
                await self._processed.ensure_loaded(origin_partition(record))
            partition = self._port.partition_of(handle)
            tracked = self._tracker.track(partition, record.offset, handle)
            job = _Job(handle, record, tracked, generation)
            self._unsettled.add(job)
            due = _not_before(record)
            if due is not None and self._gate.admit(partition, due, job):
                continue
            await self._scheduler.submit(self._lane(record), job)

    def _release_held(self, job: _Job[H]) -> None:
        self._scheduler.put(self._lane(job.record), job)

    # -- process and produce -------------------------------------------------------------------

    async def _run(self, job: _Job[H]) -> None:
        if self.error is not None:
            return
        record = job.record
        with consume_span(record, self._pipeline) as span, bind_event(
            pipeline=self._pipeline, topic=record.topic, partition=record.partition, offset=record.offset
        ):
            if self._metrics is not None:
                self._metrics.event_in(record.topic)
            while True:
                try:
                    outbound = await self.processor.process(record)
                    break
                except BreakerOpen as blocked:
                    await self._breaker_pauses.wait(blocked)
            if outbound is None:  # a duplicate dropped, or filtered by the pipeline: nothing to produce
                set_event_outcome(span, "dropped")
                self._settle(job, *self._tracker.complete(job.tracked))
                return
            if span.is_recording():
                set_event_outcome(span, _outcome(outbound), error_kind=outbound.error_kind,
                                  event_id=outbound.event_id)
            with produce_span(outbound.topic, pipeline=self._pipeline, partition=outbound.partition,
                              event_id=outbound.event_id):
                inject_headers(outbound.headers)  # the record carries this span's context onwards
                outbound.source = record  # an exactly-once port holds it until this offset is acknowledged
                try:
                    delivery = await self._port.send(outbound)
                except Exception as exc:  # noqa: BLE001 - recorded; the agent raises it
                    self._fail(exc, outbound)
                    return
        future = asyncio.ensure_future(delivery)
        future.add_done_callback(partial(self._delivered, job, outbound))

    @property
    def breaker_paused_since(self) -> float | None:
        """Loop time consumption paused for an open circuit, None while consuming."""
        return self._breaker_pauses.paused_since

    def _delivered(self, job: _Job[H], outbound: OutboundRecord, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._fail(asyncio.CancelledError("produce cancelled"), outbound)
            return
        exc = future.exception()
        if exc is not None:
            self._fail(exc, outbound)
            return
        self._settle(job, *self._tracker.complete(job.tracked))
        if self._metrics is not None:
            self._count_delivered(outbound)
        if self._markers is not None and not (outbound.failed or outbound.retry):
            self._markers.record(origin_partition(job.record), outbound.event_id)

    def _count_delivered(self, outbound: OutboundRecord) -> None:
        """Counted when the broker has the record, so the counters match the topics."""
        assert self._metrics is not None
        if outbound.failed:
            self._metrics.event_dead_lettered(outbound.error_kind or "parked")
        elif outbound.retry:
            self._metrics.event_retried(outbound.error_kind or "parked", outbound.topic)
        else:
            self._metrics.event_out(outbound.topic)

    def _fail(self, exc: BaseException, outbound: OutboundRecord) -> None:
        if self.error is None:
            log.error("producing to %s failed: %s: %s; stopping acknowledgements so nothing is "
                      "committed past this event (%s)", outbound.topic, type(exc).__name__, exc, outbound.event_id)
            self.error = EngineStopped(f"producing to {outbound.topic} failed: {type(exc).__name__}: {exc}")
            # The feeder sees self.error only in its next submit(); with an idle input there is
            # none, and the worker would sit there forever holding its partitions. Interrupt it:
            # it raises self.error (see streams.app) and the worker stops. Nothing is lost:
            # acknowledgements stopped above, so nothing past this event is committed.
            feeder = self._feeder
            if feeder is not None and feeder is not asyncio.current_task() and not feeder.done():
                feeder.cancel("engine stopped: a produce failed")

    def _raise_if_failed(self) -> None:
        error = self.error or self._scheduler.error
        if error is not None:
            raise error

    # -- acknowledge --------------------------------------------------------------------------

    def _settle(self, job: _Job[H] | None, acked: list[H], released: list[H]) -> None:
        if job is not None:
            self._unsettled.discard(job)
        for handle in released:
            self._port.release(handle)
        self.released += len(released)
        if acked and self.error is None:
            self._acks.put_nowait(acked)

    async def _ack_loop(self) -> None:
        while True:
            handles = await self._acks.get()
            try:
                if self.error is None:
                    for handle in handles:
                        await self._port.ack(handle)
                    self.acked += len(handles)
            finally:
                self._acks.task_done()

    # -- rebalance and shutdown -----------------------------------------------------------------

    def begin_drain(self, reason: str) -> None:
        """Stop starting work; give up queued and held events; in-flight ones (and on shutdown the
        queued ones behind them) get the deadline."""
        self.generation += 1
        if reason == "rebalance":
            self._port.fence()  # the old assignment's events still in Faust's hands are stale
        elif reason == "shutdown":
            # No new work after this: Faust still hands over what it had buffered. Tracked after
            # retire() below, in fresh partition queues, such an event could be acknowledged
            # while an earlier offset of its partition was given up just now -- and Faust's
            # commit skips a single-offset gap at the head (min(acked) - committed > 1 in
            # Consumer._new_offset): that offset would be committed unprocessed. Seen once in a
            # SIGTERM-under-load test: partition 5 offset 405 given up, 406 delivered after the
            # drain began and acknowledged, 407 committed.
            self._stopping = True
        self.processor.forget_parking()
        if self._processed is not None:
            self._processed.forget_loaded()
        held = self._gate.drop_all()
        keep: set[Tracked[H]] = set()
        if reason == "shutdown":
            # Queued events behind one that started are holes in their partition's completed
            # prefix: given up, they would keep everything after them from being committed (a
            # SIGTERM test committed 1,195 of 3,679 enriched events), and all of it would be
            # processed again after the restart. They run within the deadline; the queued events
            # after the last started one are given up, which holds back no finished work.
            keep = self._tracker.holes([job.tracked for job in self._scheduler.queued() + held])
        dropped = self._scheduler.drop_queued(lambda job: job.tracked in keep) + held
        for job in dropped:
            self._abandon(job)
        self._tracker.retire()
        log.info("draining for %s: gave up %d queued or held events, %d in flight%s get %.0f s",
                 reason, len(dropped), self._scheduler.running,
                 f" and {len(keep)} queued behind started ones" if keep else "", self._drain_deadline)
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.get_event_loop().create_task(self._enforce_deadline(self.generation))

    async def drained(self) -> None:
        """Wait for the drain ``begin_drain`` started: every earlier event acknowledged to the
        port, released, or given up at the deadline."""
        if self._drain_task is not None:
            await asyncio.shield(self._drain_task)
        if self._ack_task is not None and not self._ack_task.done():
            await self._acks.join()

    async def _enforce_deadline(self, generation: int) -> None:
        deadline = asyncio.get_running_loop().time() + self._drain_deadline
        while asyncio.get_running_loop().time() < deadline:
            if not any(job.generation < generation for job in self._unsettled):
                return
            await asyncio.sleep(0.05)
        late = [job for job in self._unsettled if job.generation < generation]
        log.warning("drain deadline passed: giving up %d unfinished events (delivered again later)", len(late))
        for job in late:
            self._abandon(job)

    def _abandon(self, job: _Job[H]) -> None:
        self._settle(job, *self._tracker.abandon(job.tracked))

    async def close(self, settle_timeout: float) -> None:
        """Let tracked events settle for up to ``settle_timeout`` s, release the rest, stop."""
        if not await self.wait_settled(settle_timeout):
            log.warning("closing with %d events unsettled: released, they are delivered again",
                        len(self._unsettled))
        self.generation += 1
        for job in self._scheduler.drop_queued() + self._gate.drop_all() + list(self._unsettled):
            self._abandon(job)
        if self._markers is not None:  # what is pending goes out before the producer stops (best effort)
            await self._markers.close(timeout=max(1.0, settle_timeout))
        await self.stop()

    async def wait_settled(self, timeout: float) -> bool:
        """Wait until every tracked event was acknowledged or released."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._unsettled or not self._acks.empty():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True


def _outcome(outbound: OutboundRecord) -> str:
    return "dead_lettered" if outbound.failed else "retried" if outbound.retry else "enriched"


def _lane(record: InboundRecord) -> Hashable:
    """Events of one key run in order: the key within its input partition (retries included)."""
    if record.key is None:
        return (record.topic, record.partition, record.offset)  # no key, no order to keep
    return (origin_partition(record), record.key)


def _own_lane(record: InboundRecord) -> Hashable:
    """An unordered pipeline: every event runs as soon as a pool worker is free."""
    return (record.topic, record.partition, record.offset)


def _not_before(record: InboundRecord) -> float | None:
    text = record.header(Header.NOT_BEFORE)
    if text is None or not text.isdigit():
        return None
    return int(text) / 1000.0
