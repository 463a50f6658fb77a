"""The engine's parts on their own: retry policy, offset tracking, keyed scheduler, delay gate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Hashable

import pytest

from streams.engine.delays import DelayGate
from streams.engine.offsets import OffsetTracker
from streams.engine.retry import RetryPolicy, parse_delay
from streams.engine.scheduler import KeyedScheduler


def test_retry_policy_sends_attempt_n_to_tier_n_then_to_the_dlq() -> None:
    policy = RetryPolicy("orders-enricher", ["5s", "1m", "10m"])
    assert [policy.tier_after(n).topic for n in (1, 2, 3)] == [  # type: ignore[union-attr]
        "orders-enricher.retry.5s", "orders-enricher.retry.1m", "orders-enricher.retry.10m"]
    assert policy.tier_after(4) is None
    assert parse_delay("500ms") == 0.5 and parse_delay("2h") == 7200
    with pytest.raises(ValueError, match="must not decrease"):
        RetryPolicy("p", ["1m", "5s"])


def test_only_the_completed_prefix_is_acknowledged_in_offset_order() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    entries = [tracker.track("p0", offset, offset) for offset in range(5)]
    assert tracker.complete(entries[2]) == ([], [])
    assert tracker.complete(entries[1]) == ([], [])
    assert tracker.complete(entries[0]) == ([0, 1, 2], [])
    assert tracker.complete(entries[4]) == ([], [])
    assert tracker.complete(entries[3]) == ([3, 4], [])
    assert tracker.pending == 0


def test_nothing_at_or_after_an_abandoned_event_is_acknowledged() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    entries = [tracker.track("p0", offset, offset) for offset in range(4)]
    tracker.complete(entries[3])
    assert tracker.complete(entries[0]) == ([0], [])
    assert tracker.abandon(entries[1]) == ([], [1])
    assert tracker.complete(entries[2]) == ([], [2, 3])


def test_partitions_are_tracked_independently() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    a = tracker.track("p0", 0, "a0")
    b = tracker.track("p1", 0, "b0")
    assert tracker.complete(b) == (["b0"], [])
    assert tracker.complete(a) == (["a0"], [])


async def test_lanes_keep_submission_order_and_concurrency_stays_bounded() -> None:
    seen: dict[str, list[int]] = {}
    active = 0
    peak = 0

    async def handle(item: tuple[str, int]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        seen.setdefault(item[0], []).append(item[1])
        await asyncio.sleep(random.uniform(0, 0.003))
        active -= 1

    scheduler: KeyedScheduler[tuple[str, int]] = KeyedScheduler(handle, concurrency=16, capacity=64)
    scheduler.start()
    items = [(f"k{random.randrange(40)}", n) for n in range(2000)]
    for item in items:
        await scheduler.submit(item[0], item)
    assert await scheduler.wait_idle(10)
    await scheduler.stop()

    expected: dict[str, list[int]] = {}
    for key, n in items:
        expected.setdefault(key, []).append(n)
    assert seen == expected
    assert 8 < peak <= 16
    assert scheduler.peak_running <= 16


async def test_submit_waits_while_the_buffer_is_full() -> None:
    release = asyncio.Event()

    async def handle(_: int) -> None:
        await release.wait()

    scheduler: KeyedScheduler[int] = KeyedScheduler(handle, concurrency=2, capacity=4)
    scheduler.start()
    for n in range(4):
        await scheduler.submit(n, n)
    blocked = asyncio.create_task(scheduler.submit(99, 99))
    await asyncio.sleep(0.05)
    assert not blocked.done() and scheduler.size == 4
    release.set()
    await asyncio.wait_for(blocked, 5)
    assert await scheduler.wait_idle(5)
    await scheduler.stop()


async def test_dropping_queued_items_leaves_running_ones_alone() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(item: int) -> None:
        handled.append(item)
        started.set()
        await release.wait()

    scheduler: KeyedScheduler[int] = KeyedScheduler(handle, concurrency=1, capacity=10)
    scheduler.start()
    for n in range(5):
        await scheduler.submit("same-key", n)
    await started.wait()
    assert sorted(scheduler.drop_queued()) == [1, 2, 3, 4]
    release.set()
    assert await scheduler.wait_idle(5)
    await scheduler.stop()
    assert handled == [0]


async def test_delay_gate_pauses_until_the_head_is_due_and_keeps_order() -> None:
    released: list[str] = []
    paused: list[Hashable] = []
    resumed: list[Hashable] = []
    gate: DelayGate[str] = DelayGate(released.append, paused.append, resumed.append)
    now = time.time()
    assert gate.admit("p0", now - 1, "already-due") is False
    assert gate.admit("p0", now + 0.2, "a") is True
    assert gate.admit("p0", now - 1, "b-behind-a") is True  # due, but waits behind the head
    assert gate.admit("p1", now + 0.05, "c") is True
    assert paused == ["p0", "p1"]
    deadline = time.monotonic() + 5
    while len(released) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert released == ["c", "a", "b-behind-a"]
    assert resumed == ["p1", "p0"]
    assert gate.held == 0


async def test_delay_gate_drop_forgets_everything_held() -> None:
    released: list[str] = []
    gate: DelayGate[str] = DelayGate(released.append, lambda _: None, lambda _: None)
    gate.admit("p0", time.time() + 0.05, "a")
    assert gate.drop_all() == ["a"]
    await asyncio.sleep(0.1)
    assert released == []


class _ReleasingPort:
    """Just what a shutdown drain touches: every other call would be the engine processing an event."""

    def __init__(self) -> None:
        self.released: list[str] = []

    def is_stale(self, handle: str) -> bool:
        return False  # as Faust's message without a generation: only the engine's own state decides

    def release(self, handle: str) -> None:
        self.released.append(handle)

    def pause(self, partition: Hashable) -> None:  # handed to the delay gate at construction
        pass

    resume = pause

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the engine called port.{name} for an event delivered after shutdown began")


class _IdleProcessor:
    def forget_parking(self) -> None:
        pass


async def test_events_delivered_after_a_shutdown_drain_began_are_released_not_processed() -> None:
    """Faust hands over buffered events after the drain; processed and acked in fresh offset queues,
    one could be committed past an offset the drain gave up (a loss seen in the SIGTERM test)."""
    from streams.engine.engine import Engine

    port = _ReleasingPort()
    engine = Engine(_IdleProcessor(), port, max_in_flight=2, max_buffered=4, drain_deadline=0.1)  # type: ignore[arg-type]
    await engine.start()
    engine.begin_drain("shutdown")
    await engine.submit(["offset-406", "offset-407"])
    assert port.released == ["offset-406", "offset-407"] and engine.released == 2
    await engine.stop()


def test_holes_are_the_waiting_events_behind_a_started_one_of_their_partition() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    p0 = [tracker.track("p0", offset, offset) for offset in range(6)]
    p1 = [tracker.track("p1", offset, offset) for offset in range(3)]
    # p0: 0, 2 and 4 started (4 finished, behind pending ones); 1, 3 and 5 never started.
    tracker.complete(p0[4])
    waiting = [p0[1], p0[3], p0[5], *p1]
    assert sorted(e.offset for e in tracker.holes(waiting) if e.queue is p0[0].queue) == [1, 3]
    assert not any(e.queue is p1[0].queue for e in tracker.holes(waiting))  # nothing started in p1


async def test_dropping_queued_items_can_keep_some_and_they_run_in_lane_order() -> None:
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(item: int) -> None:
        handled.append(item)
        if item == 0:
            await release.wait()

    scheduler: KeyedScheduler[int] = KeyedScheduler(handle, concurrency=2, capacity=20)
    scheduler.start()
    for n in range(6):
        await scheduler.submit("a", n)  # 0 runs, 1..5 wait behind it
    while handled != [0]:
        await asyncio.sleep(0)
    assert scheduler.queued() == [1, 2, 3, 4, 5]
    assert scheduler.drop_queued(keep=lambda n: n in (2, 4)) == [1, 3, 5]
    assert scheduler.queued() == [2, 4]
    release.set()
    assert await scheduler.wait_idle(5)
    await scheduler.stop()
    assert handled == [0, 2, 4]


async def test_a_lane_dropped_and_queued_again_never_runs_twice_at_once() -> None:
    """drop_queued leaves the dropped lane's entry in the ready queue; queued again, the lane has
    two entries, and two workers must not run it at the same time."""
    running: set[str] = set()
    overlaps: list[str] = []
    gate = asyncio.Event()

    async def handle(item: str) -> None:
        lane = item[0]
        if lane in running:
            overlaps.append(item)
        running.add(lane)
        await gate.wait()
        running.discard(lane)

    scheduler: KeyedScheduler[str] = KeyedScheduler(handle, concurrency=3, capacity=10)
    await scheduler.submit("x", "x-blocker")  # queued before the workers start: dropped below
    assert scheduler.drop_queued() == ["x-blocker"]  # lane x stays in the ready queue
    await scheduler.submit("x", "x1")  # lane x again: a second ready entry
    await scheduler.submit("x", "x2")
    scheduler.start()
    await asyncio.sleep(0.05)
    gate.set()
    assert await scheduler.wait_idle(5)
    await scheduler.stop()
    assert overlaps == []


class _RecordingPort:
    """An engine port over plain strings "p<partition>-<offset>-<key>"; sends complete at once."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.released: list[str] = []
        self.sent: list[str] = []

    def record_of(self, handle: str) -> object:
        from streams.engine.records import InboundRecord

        partition, offset, key = handle.split("-")
        return InboundRecord("in", int(partition[1:]), int(offset), 0, key.encode(), b"v")

    def is_stale(self, handle: str) -> bool:
        return False

    def fence(self) -> None:
        pass

    async def send(self, record: object) -> asyncio.Future[None]:
        self.sent.append(record.event_id)  # type: ignore[attr-defined]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def ack(self, handle: str) -> None:
        self.acked.append(handle)

    def release(self, handle: str) -> None:
        self.released.append(handle)

    def pause(self, partition: Hashable) -> None:
        pass

    resume = pause

    def partition_of(self, handle: str) -> Hashable:
        return handle.split("-")[0]

    def assigned(self) -> list[Hashable]:
        return ["p0"]


class _GatedProcessor:
    """Enriches every event; events of key "slow" wait until ``go`` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    def forget_parking(self) -> None:
        pass

    async def process(self, record: object) -> object:
        from streams.engine.records import OutboundRecord

        if record.key == b"slow":  # type: ignore[attr-defined]
            await self.go.wait()
        return OutboundRecord("out", record.key, b"e", [], f"e{record.offset}")  # type: ignore[attr-defined]


async def test_a_shutdown_drain_runs_the_queued_events_that_hold_back_the_commit() -> None:
    """p0: 0 "slow" runs; 1 "slow" waits behind it in its key's lane; 2 and 3 (other keys) finish.
    Given up at shutdown, offset 1 would keep 2 and 3 from being acknowledged (so committed)."""
    from streams.engine.engine import Engine

    port = _RecordingPort()
    processor = _GatedProcessor()
    engine = Engine(processor, port, max_in_flight=4, max_buffered=8, drain_deadline=5)  # type: ignore[arg-type]
    await engine.start()
    await engine.submit(["p0-0-slow", "p0-1-slow", "p0-2-a", "p0-3-b", "p0-4-slow"])
    while sorted(port.sent) != ["e2", "e3"]:
        await asyncio.sleep(0.01)
    engine.begin_drain("shutdown")  # 1 and 4 queued: 1 is behind started 2 and 3; 4 is behind nothing
    processor.go.set()
    await engine.close(settle_timeout=5)
    assert port.acked == ["p0-0-slow", "p0-1-slow", "p0-2-a", "p0-3-b"]
    assert port.released == ["p0-4-slow"] and sorted(port.sent) == ["e0", "e1", "e2", "e3"]
