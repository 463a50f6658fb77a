"""Strict per-key order across retries (opt-in): later events of a key wait behind a retrying one.

Without it, when event 1 of key K goes to a retry tier, event 2 of K is processed at once and
overtakes it. With it, event 2 is *parked*: sent to the retry tier that holds event 1, behind
it (same partition, later offset), without calling any API. When a record of K comes back from
a tier it runs only if it is K's oldest outstanding event (lowest origin offset); otherwise it
is parked again behind that one, in that one's tier. So K's events reach the output in input
order, at the cost of waiting for the slowest of them: one failing event delays every later
event of its key by its retries. docs/strict-order.md is the operator's account.

**The state and where it comes from.** Per origin partition, per key: the outstanding events
(origin offset, event id, the tier their live record sits in, its hop). The worker that owns
input partition N owns partition N of every retry tier (co-partitioned assignment), so the
state of N is exactly what partition N of the tiers holds past the group's committed offsets:
every record there is either still to be processed, or was processed but not committed (it
will be delivered again). It is rebuilt from there (``TierScanner``) the first time an event of
partition N is processed after a start, a restart or a rebalance (``forget``), and every event
of N waits for that rebuild. Rebuilding from the tiers rather than keeping the state in a
compacted topic of its own: the tiers *are* the truth (a record there will be delivered; a
state topic written beside them could disagree with them after a crash between the two
writes), and they need no second write per hop.

**Copies and hops.** A crash or rebalance can leave several records of one event past the
committed offsets: the input record and the tier record it became, or a tier 1 record and the
tier 2 record it became. Every hop to a tier writes ``streams.hop`` (previous hop + 1; the input
record is hop 0), so the rebuild knows which copy is live: the highest hop. A copy with a lower
hop than the live one, or no higher than the one an event finished with, is *stale*: it is
acknowledged without processing (the live copy carries on), so a restart neither runs an event
twice in that case nor lets an old copy overtake the key's order. Finished events of the
rebuild are remembered (their hop) until the next rebuild, so that their stale copies are
known; events parked during the run are not (without a restart there are no stale copies).

**A dead-lettered head.** When an outstanding event goes to the DLQ (a permanent failure, or
its last tier failed) it leaves the key's state, and the events parked behind it go on in
order: the next oldest becomes the head. Its dead letter carries ``streams.behind.count`` and
``streams.behind.event-ids``: which later events of the key were waiting behind it.

Limits: a record produced by a worker that kept running past its session (a zombie after the
drain deadline) after the rebuild read the tiers is not in the state; it runs when it comes
back, at-least-once as any redelivery. Records written before the hop header existed have no
hop: they are never taken for stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.names import Header

log = logging.getLogger("streams.parking")

RESCAN_AFTER = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between attempts at a rebuild that failed


@dataclass(frozen=True, slots=True)
class TierCopy:
    """One record of an event in a retry tier partition, past the group's committed offset."""

    key: bytes
    origin_offset: int
    event_id: str
    tier: int  # index of the retry tier it sits in
    hop: int | None  # None: written before the hop header existed


@dataclass(slots=True)
class Outstanding:
    offset: int  # origin offset
    event_id: str
    tier: int  # index of the retry tier its live record sits in
    hop: int | None  # the live record's hop
    rebuilt: bool = False  # found by a rebuild: its stale copies may still come


class PartitionParking:
    """The outstanding events of one origin partition, by key."""

    def __init__(self, copies: Iterable[TierCopy] = ()) -> None:
        self._keys: dict[bytes, dict[int, Outstanding]] = {}
        self._finished: dict[int, int] = {}  # origin offset -> hop, for rebuilt events that finished
        for copy in copies:
            entries = self._keys.setdefault(copy.key, {})
            entry = entries.get(copy.origin_offset)
            if entry is None or _newer(copy.hop, entry.hop):
                entries[copy.origin_offset] = Outstanding(copy.origin_offset, copy.event_id, copy.tier, copy.hop,
                                                          rebuilt=True)

    @property
    def outstanding(self) -> int:
        return sum(len(entries) for entries in self._keys.values())

    def keys(self) -> dict[bytes, list[Outstanding]]:
        """Each key's outstanding events, oldest first (for logs and tests)."""
        return {key: sorted(entries.values(), key=_origin) for key, entries in self._keys.items()}

    def is_stale(self, key: bytes, offset: int, hop: int | None) -> bool:
        """True for a copy older than the event's live record, or no newer than the one it finished with."""
        if hop is None:
            return False
        entry = self._keys.get(key, {}).get(offset)
        if entry is not None:
            return entry.hop is not None and hop < entry.hop
        finished = self._finished.get(offset)
        return finished is not None and hop <= finished

    def blocker(self, key: bytes, offset: int) -> Outstanding | None:
        """The oldest outstanding event of ``key`` if it is not this one, else None."""
        entries = self._keys.get(key)
        if not entries:
            return None
        head = min(entries.values(), key=_origin)
        return None if head.offset == offset else head

    def park(self, key: bytes, offset: int, event_id: str, tier: int, hop: int | None) -> None:
        """This event's live record is now ``hop``, in ``tier``."""
        entries = self._keys.setdefault(key, {})
        entry = entries.get(offset)
        if entry is None:
            entries[offset] = Outstanding(offset, event_id, tier, hop)
        else:
            entry.tier, entry.hop = tier, hop

    def behind(self, key: bytes, offset: int) -> list[Outstanding]:
        """The outstanding events of ``key`` after this one, oldest first."""
        return sorted((e for e in self._keys.get(key, {}).values() if e.offset > offset), key=_origin)

    def settle(self, key: bytes, offset: int, hop: int | None) -> None:
        """This event left the retry path (output, DLQ, filtered, dropped as a duplicate)."""
        entries = self._keys.get(key)
        if entries is None:
            return
        entry = entries.pop(offset, None)
        if not entries:
            del self._keys[key]
        if entry is not None and entry.rebuilt:
            known = [h for h in (hop, entry.hop) if h is not None]
            if known:
                self._finished[offset] = max(known)


def _origin(entry: Outstanding) -> int:
    return entry.offset


def _offset(meta: Any) -> int:
    """A committed offset, 0 when the group has none (the worker's consumer starts at the beginning then)."""
    return int(meta.offset) if meta is not None and meta.offset >= 0 else 0


def _newer(hop: int | None, than: int | None) -> bool:
    return than is None or (hop is not None and hop > than)


def copy_of(tier: int, partition: int, key: bytes | None, headers: Mapping[str, bytes]) -> TierCopy | None:
    """What a retry tier record says of its event, or None if it is not one of ``partition``'s keyed events."""
    def number(name: str) -> int | None:
        raw = headers.get(name)
        text = raw.decode("ascii", "replace") if raw is not None else ""
        return int(text) if text.isdigit() and len(text) <= 19 else None

    origin_offset = number(Header.ORIGIN_OFFSET)
    if key is None or origin_offset is None or number(Header.ORIGIN_PARTITION) != partition:
        return None
    event_id = headers.get(Header.EVENT_ID, b"").decode("utf-8", "replace")
    return TierCopy(key, origin_offset, event_id, tier, number(Header.HOP))


Scan = Callable[[int], Awaitable[list[TierCopy]]]


class TierScanner:
    """Reads partition N of every retry tier from the group's committed offset to its end.

    A consumer of its own, outside the group (it joins nothing and commits nothing); the
    committed offsets come from an admin client. Both stop when the scan ends.
    """

    def __init__(self, bootstrap: str, group: str, tier_topics: list[str],
                 security: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._tiers = list(tier_topics)
        self._security = dict(security or {})  # aiokafka kwargs (streams.security.kafka_security)

    async def __call__(self, partition: int) -> list[TierCopy]:
        tps = [TopicPartition(topic, partition) for topic in self._tiers]
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **self._security)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self._group, partitions=tps)
        finally:
            await admin.close()
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                    isolation_level="read_committed", **self._security)
        tiers = {topic: index for index, topic in enumerate(self._tiers)}
        copies: list[TierCopy] = []
        try:
            await consumer.start()
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            begin = {tp: max(_offset(committed.get(tp)), starts[tp]) for tp in tps}
            remaining = {tp: ends[tp] for tp in tps if begin[tp] < ends[tp]}  # where each read stops
            if remaining:
                consumer.assign(list(remaining))
                for tp in remaining:
                    consumer.seek(tp, begin[tp])
            while remaining:
                batch: Any = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset < remaining.get(tp, 0):
                            copy = copy_of(tiers[tp.topic], partition, record.key, dict(record.headers or ()))
                            if copy is not None:
                                copies.append(copy)
                for tp in list(remaining):
                    position = await consumer.position(tp)
                    stable = consumer.last_stable_offset(tp)  # records of an open transaction are not ours to see
                    if position >= remaining[tp] or (not batch.get(tp) and stable is not None and stable >= 0
                                                     and position >= stable):
                        del remaining[tp]
        finally:
            await consumer.stop()
        return copies


class KeyParking:
    """The parking state of the partitions this worker processes, each rebuilt on first use.

        parking = KeyParking(TierScanner(bootstrap, group, tiers))
        state = await parking.partition(3)     # rebuilds partition 3 once; concurrent callers share it
        parking.forget()                       # a rebalance or shutdown began: rebuild when next used

    With no ``scan`` the state starts empty (nothing to rebuild from).
    """

    def __init__(self, scan: Scan | None = None) -> None:
        self._scan = scan
        self._states: dict[int, PartitionParking] = {}
        self._loading: dict[int, asyncio.Task[PartitionParking]] = {}
        self._tasks: set[asyncio.Task[PartitionParking]] = set()  # strong references while they run
        self._epoch = 0
        self.rebuilds = 0

    async def partition(self, partition: int) -> PartitionParking:
        state = self._states.get(partition)
        if state is not None:
            return state
        if self._scan is None:
            return self._states.setdefault(partition, PartitionParking())
        epoch = self._epoch
        task = self._loading.get(partition)
        if task is None:
            task = self._loading[partition] = asyncio.create_task(self._rebuild(partition),
                                                                  name=f"parking-rebuild-{partition}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        state = await asyncio.shield(task)
        if epoch == self._epoch:  # else a rebalance began meanwhile: this caller's event is of the old one
            self._states.setdefault(partition, state)
            self._loading.pop(partition, None)
            return self._states[partition]
        return state

    def loaded(self, partition: int) -> PartitionParking | None:
        return self._states.get(partition)

    def forget(self) -> None:
        """A rebalance or shutdown began: every partition is rebuilt from the tiers when next used.
        Events still finishing under the old assignment update the states they started with."""
        self._epoch += 1
        self._states = {}
        self._loading = {}

    async def _rebuild(self, partition: int) -> PartitionParking:
        assert self._scan is not None
        attempt = 0
        while True:
            try:
                copies = await self._scan(partition)
                break
            except (KafkaError, OSError) as exc:
                wait = RESCAN_AFTER[min(attempt, len(RESCAN_AFTER) - 1)]
                attempt += 1
                log.warning("could not read the retry tiers of partition %d to rebuild its strict key order "
                            "(%s: %s); its events wait, trying again in %.0f s", partition, type(exc).__name__,
                            exc, wait)
                await asyncio.sleep(wait)
        state = PartitionParking(copies)
        self.rebuilds += 1
        log.info("strict key order of partition %d rebuilt from %d retry tier records: %d events of %d keys "
                 "outstanding", partition, len(copies), state.outstanding, len(state.keys()))
        return state
