"""Delay gates for retry tiers: hold a partition until its head record is due.

A record from a retry tier carries ``streams.not-before``. If it is not due yet, its
partition is paused (no more fetching), the record and any already-fetched ones behind it
wait in order, and one timer per partition releases them when the head is due; then the
partition resumes. Nothing sleeps per record, and other partitions keep flowing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class DelayGate(Generic[T]):
    def __init__(
        self,
        release: Callable[[T], None],
        pause: Callable[[Hashable], None],
        resume: Callable[[Hashable], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._release = release
        self._pause = pause
        self._resume = resume
        self._clock = clock
        self._held: dict[Hashable, deque[tuple[float, T]]] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    @property
    def held(self) -> int:
        return sum(len(queue) for queue in self._held.values())

    @property
    def paused_partitions(self) -> list[Hashable]:
        return list(self._held)

    def admit(self, partition: Hashable, due_at: float, item: T) -> bool:
        """True if the item is held (not due, or behind a held one); False to run it now."""
        queue = self._held.get(partition)
        if queue is not None:
            queue.append((due_at, item))
            return True
        if due_at <= self._clock():
            return False
        self._held[partition] = deque(((due_at, item),))
        self._pause(partition)
        self._schedule(partition, due_at)
        return True

    def heads(self) -> dict[Hashable, tuple[int, float]]:
        """Each held partition's records held and its head's due time (epoch seconds)."""
        return {partition: (len(queue), queue[0][0]) for partition, queue in self._held.items() if queue}

    def overdue(self, slack: float) -> list[Hashable]:
        """Partitions whose head is past due by more than ``slack`` seconds: a release is stuck."""
        now = self._clock()
        return [partition for partition, queue in self._held.items() if queue and queue[0][0] + slack < now]

    def drop_all(self) -> list[T]:
        """Forget every held item (rebalance, shutdown); their partitions are not resumed."""
        for timer in self._timers.values():
            timer.cancel()
        dropped = [item for queue in self._held.values() for _, item in queue]
        self._held.clear()
        self._timers.clear()
        return dropped

    def _schedule(self, partition: Hashable, due_at: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, due_at - self._clock())
        self._timers[partition] = loop.call_later(delay, self._on_due, partition)

    def _on_due(self, partition: Hashable) -> None:
        self._timers.pop(partition, None)
        queue = self._held.get(partition)
        if queue is None:
            return
        now = self._clock()
        while queue and queue[0][0] <= now:
            self._release(queue.popleft()[1])
        if queue:
            self._schedule(partition, queue[0][0])
        else:
            del self._held[partition]
            self._resume(partition)
