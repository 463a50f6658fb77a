"""Offset tracking: acknowledge events strictly in offset order, only the completed prefix.

Events complete out of order (different keys run concurrently); Faust must only ever see
acks in offset order per partition, and never for an event behind unfinished work. Each
partition keeps a queue of its delivered events; ``complete`` marks one done and returns the
contiguous done prefix to acknowledge.

A rebalance or shutdown ``retire``s the current queues: events queued but never started are
abandoned (never acked, so their offsets are not committed and they are delivered again),
and from the first abandoned event on, everything behind it in that partition is released
unacknowledged as it finishes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

H = TypeVar("H")


class _State(enum.Enum):
    PENDING = 0
    DONE = 1
    ABANDONED = 2


class Tracked(Generic[H]):
    """One delivered event in its partition's queue."""

    __slots__ = ("handle", "offset", "queue", "state")

    def __init__(self, handle: H, offset: int, queue: _PartitionQueue[H]) -> None:
        self.handle = handle
        self.offset = offset
        self.queue = queue
        self.state = _State.PENDING


class _PartitionQueue(Generic[H]):
    __slots__ = ("broken", "entries")

    def __init__(self) -> None:
        self.entries: deque[Tracked[H]] = deque()
        self.broken = False  # an abandoned event was at the head: release the rest, ack nothing


class OffsetTracker(Generic[H]):
    """Per-partition queues of delivered events; decides what may be acknowledged."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, _PartitionQueue[H]] = {}
        self.pending = 0

    def track(self, partition: Hashable, offset: int, handle: H) -> Tracked[H]:
        queue = self._queues.get(partition)
        if queue is None:
            queue = self._queues[partition] = _PartitionQueue()
        entry = Tracked(handle, offset, queue)
        queue.entries.append(entry)
        self.pending += 1
        return entry

    def complete(self, entry: Tracked[H]) -> tuple[list[H], list[H]]:
        """Mark an event done; return (handles to ack in order, handles to release unacked)."""
        if entry.state is _State.PENDING:
            entry.state = _State.DONE
        return self._pop_prefix(entry.queue)

    def abandon(self, entry: Tracked[H]) -> tuple[list[H], list[H]]:
        """Give up on an event that never finished; nothing at or after it is acked."""
        if entry.state is _State.PENDING:
            entry.state = _State.ABANDONED
        return self._pop_prefix(entry.queue)

    def holes(self, waiting: Iterable[Tracked[H]]) -> set[Tracked[H]]:
        """Of ``waiting`` (tracked, never started), those behind an event of their partition that
        started or finished: until they finish, none of the offsets after them can be committed."""
        waiting = set(waiting)
        frontier: dict[_PartitionQueue[H], int] = {}
        for queue in self._queues.values():
            for entry in reversed(queue.entries):
                if entry not in waiting:
                    frontier[queue] = entry.offset
                    break
        return {entry for entry in waiting if entry.offset < frontier.get(entry.queue, -1)}

    def retire(self) -> None:
        """Start afresh after a rebalance: events tracked so far finish in their old queues."""
        self._queues = {}

    def _pop_prefix(self, queue: _PartitionQueue[H]) -> tuple[list[H], list[H]]:
        acked: list[H] = []
        released: list[H] = []
        entries = queue.entries
        while entries and entries[0].state is not _State.PENDING:
            head = entries.popleft()
            self.pending -= 1
            if head.state is _State.ABANDONED:
                queue.broken = True
            (released if queue.broken else acked).append(head.handle)
        return acked, released
