"""Key-ordered concurrency: one lane per key, a fixed pool of workers, bounded buffering.

    scheduler = KeyedScheduler(handle, concurrency=256, capacity=10_000)
    scheduler.start()
    await scheduler.submit(("orders", 3, b"C000042"), item)   # waits while the buffer is full

Items of one lane run one after another in submission order; different lanes run
concurrently on at most ``concurrency`` workers. No task is created per item: the workers
are long-lived and take the next ready lane.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyedScheduler(Generic[T]):
    def __init__(self, handle: Callable[[T], Awaitable[None]], *, concurrency: int, capacity: int) -> None:
        if concurrency < 1 or capacity < concurrency:
            raise ValueError("need 1 <= concurrency <= capacity")
        self._handle = handle
        self._concurrency = concurrency
        self._capacity = capacity
        self._lanes: dict[Hashable, deque[T]] = {}
        self._running: set[Hashable] = set()
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self.size = 0  # items queued or running
        self.peak_running = 0
        self.error: BaseException | None = None

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"lane-worker-{n}")
                             for n in range(self._concurrency)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    async def submit(self, lane: Hashable, item: T) -> None:
        while self.size >= self._capacity:
            self._space.clear()
            await self._space.wait()
        self.put(lane, item)

    def put(self, lane: Hashable, item: T) -> None:
        """Queue an item without waiting for space (for items already counted elsewhere)."""
        queue = self._lanes.get(lane)
        if queue is None:
            self._lanes[lane] = deque((item,))
            self._ready.put_nowait(lane)
        else:
            queue.append(item)
        self.size += 1
        self._idle.clear()

    def queued(self) -> list[T]:
        """Every item that has not started, lane by lane in submission order."""
        waiting: list[T] = []
        for lane, queue in self._lanes.items():
            waiting.extend(list(queue)[1:] if lane in self._running else queue)
        return waiting

    def drop_queued(self, keep: Callable[[T], bool] | None = None) -> list[T]:
        """Remove every item that has not started (but those ``keep`` says to keep, which run
        in their lane's order); running ones finish."""
        dropped: list[T] = []
        for lane, queue in list(self._lanes.items()):
            running = queue.popleft() if lane in self._running else None
            kept: list[T] = []
            for item in queue:
                (kept if keep is not None and keep(item) else dropped).append(item)
            queue.clear()
            if running is not None:
                queue.append(running)
            queue.extend(kept)
            if not queue:
                del self._lanes[lane]
            # a lane that keeps items without running is still in _ready: it was put there when it
            # got its first item or when its last run ended
        self.size -= len(dropped)
        self._after_change()
        return dropped

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _work(self) -> None:
        while True:
            lane = await self._ready.get()
            queue = self._lanes.get(lane)
            if not queue or lane in self._running:
                # Dropped while it waited; or a stale entry of a lane dropped and queued again
                # (it then has two entries): the worker running it puts it back when done.
                continue
            self._running.add(lane)
            self.peak_running = max(self.peak_running, len(self._running))
            try:
                await self._handle(queue[0])
            except Exception as exc:  # noqa: BLE001 - a handler bug must stop the engine, not a worker
                self.error = exc
            finally:
                self._running.discard(lane)
                queue.popleft()
                self.size -= 1
                if queue:
                    self._ready.put_nowait(lane)
                else:
                    del self._lanes[lane]
                self._after_change()

    def _after_change(self) -> None:
        if self.size < self._capacity:
            self._space.set()
        if self.size == 0:
            self._idle.set()
