"""Strict per-key order across retries (opt-in): later events of a key wait behind a retrying one.

Without it, when event 1 of key K goes to a retry tier, event 2 of K is processed at once and
overtakes it. With it, event 2 is *parked*: sent to the retry tier that holds event 1, behind
it (same partition, later offset), without calling any API. When a record of K comes back from
a tier it runs only if it is K's oldest outstanding event; otherwise it is parked again
behind that one. So K's events reach the output in input order, at the cost of waiting for
the slowest of them: one failing event delays every later event of its key by its retries.

The state is in memory, per worker: the worker that owns a key's input partition owns the
same partition of every retry tier (co-partitioned assignment). A restart or rebalance
forgets it; records already parked then come back in tier order, which can reorder a key
that was mid-retry at that moment.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Outstanding:
    offset: int  # origin offset
    event_id: str
    tier: int  # index of the retry tier its record sits in


class KeyParking:
    def __init__(self) -> None:
        self._keys: dict[Hashable, OrderedDict[int, _Outstanding]] = {}
        self.parked = 0

    def blocker(self, key: Hashable, offset: int) -> _Outstanding | None:
        """The oldest outstanding event of ``key`` if it is not this one, else None."""
        outstanding = self._keys.get(key)
        if not outstanding:
            return None
        head = next(iter(outstanding.values()))
        return None if head.offset == offset else head

    def park(self, key: Hashable, offset: int, event_id: str, tier: int) -> None:
        """Record that this event now sits in ``tier``, behind its key's oldest one."""
        outstanding = self._keys.setdefault(key, OrderedDict())
        entry = outstanding.get(offset)
        if entry is None:
            outstanding[offset] = _Outstanding(offset, event_id, tier)
        else:
            entry.tier = tier
        self.parked += 1

    def settle(self, key: Hashable, offset: int) -> None:
        """This event left the retry path (output or DLQ)."""
        outstanding = self._keys.get(key)
        if outstanding is not None:
            outstanding.pop(offset, None)
            if not outstanding:
                del self._keys[key]

    def forget(self) -> None:
        self._keys.clear()
