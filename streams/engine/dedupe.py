"""Processed event ids: detect events that were already enriched, and optionally drop them.

At-least-once delivery means a crash or rebalance re-delivers events processed since the last
commit. Each enriched event's id is appended to ``<pipeline>.processed`` (a topic with the
input's partition count, partition = the event's input partition, time-based retention);
when a worker starts on a partition it loads that partition's ids, newest ``max_ids`` kept.
An event whose id is known is counted as a duplicate and, in ``drop`` mode, acknowledged
without calling the APIs or producing again.

The id is written after the output is acknowledged, not atomically with it: a crash between
the two lets one duplicate through undetected. Kafka transactions would close that window at
a throughput cost; this is the cheap, bounded-memory detector.

Ids are written in batches (``marker``): one record per input partition holds the ids of the
events acknowledged in the last ``MARKER_LINGER`` seconds (at most ``MARKER_BATCH``), a JSON
array in the value, instead of one record per event, which cost a produce per event. So the
window above is that linger wide: a crash up to ~50 ms after an output lets the events of that
batch through as undetected duplicates. Records of the older format (the id as the key, one
per event) still load.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.engine.records import OutboundRecord

log = logging.getLogger("streams.dedupe")

MARKER_HEADER = "streams.processed-ids"  # on a batch marker: how many ids its value holds
MARKER_BATCH = 1000  # most ids in one marker record
MARKER_LINGER = 0.05  # seconds ids wait to be written together
RELOAD_AFTER = 5.0  # seconds before a partition whose ids could not be loaded is tried again


def marker(ids: list[str]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of one processed-ids record holding ``ids``."""
    return json.dumps(ids, separators=(",", ":")).encode(), [(MARKER_HEADER, str(len(ids)).encode())]


def ids_of(key: bytes | None, value: bytes | None, headers: Any) -> list[str]:
    """The event ids one processed-ids record holds: a batch marker's, or the key (older format)."""
    if any(name == MARKER_HEADER for name, _ in headers or ()):
        try:
            ids = json.loads(value or b"[]")
        except ValueError:
            ids = None
        if isinstance(ids, list):
            return [item for item in ids if isinstance(item, str)]
        log.warning("ignoring a processed-ids record whose value is not a JSON list of ids")
        return []
    return [key.decode("utf-8", "replace")] if key is not None else []


class DedupeMode(enum.StrEnum):
    OFF = "off"
    COUNT = "count"  # detect and count, still process (at-least-once output)
    DROP = "drop"  # detect, count and skip


class ProcessedIds:
    def __init__(self, bootstrap: str, topic: str, *, mode: DedupeMode, max_ids: int = 20_000,
                 security: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        self.mode = mode
        self._bootstrap = bootstrap
        self._security = dict(security or {})  # aiokafka kwargs (streams.security.kafka_security)
        self._max_ids = max_ids
        self._ids: dict[int, OrderedDict[str, None]] = {}
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._retry_at: dict[int, float] = {}  # loop time before which a failed load is not tried again
        self._failed: set[int] = set()  # partitions whose load failed and was reported
        self.duplicates = 0

    @property
    def enabled(self) -> bool:
        return self.mode is not DedupeMode.OFF

    async def ensure_loaded(self, partition: int) -> None:
        """Load a partition's recorded ids once; concurrent callers share one load.

        Dedupe is best effort: when the brokers cannot be reached the partition's events go on
        without it (duplicates are not detected) and the load is tried again ``RELOAD_AFTER``
        seconds later. One warning per partition until it loads.
        """
        if partition in self._ids:
            return
        if asyncio.get_running_loop().time() < self._retry_at.get(partition, 0.0):
            return
        task = self._loading.get(partition)
        if task is None:
            task = self._loading[partition] = asyncio.create_task(self._load(partition))
        try:
            await asyncio.shield(task)
        except (KafkaError, OSError) as exc:
            self._loading.pop(partition, None)
            self._retry_at[partition] = asyncio.get_running_loop().time() + RELOAD_AFTER
            if partition not in self._failed:
                self._failed.add(partition)
                log.warning("could not load the processed event ids of %s[%d] (%s: %s): its duplicates are not "
                            "detected until they load; trying again every %.0f s", self.topic, partition,
                            type(exc).__name__, exc, RELOAD_AFTER)

    def seen(self, partition: int, event_id: str) -> bool:
        """True if this event was enriched before; counts it."""
        ids = self._ids.get(partition)
        if ids is None or event_id not in ids:
            return False
        self.duplicates += 1
        return True

    def remember(self, partition: int, event_id: str) -> None:
        ids = self._ids.setdefault(partition, OrderedDict())
        ids[event_id] = None
        if len(ids) > self._max_ids:
            ids.popitem(last=False)

    def forget_loaded(self) -> None:
        """After a rebalance, partitions are loaded again from the topic when next seen."""
        self._ids.clear()
        self._loading.clear()
        self._retry_at.clear()

    async def _load(self, partition: int) -> None:
        # read_committed: with exactly-once the markers are written in the transactions of their
        # outputs, and an aborted one's events were not processed (the same without transactions)
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    **self._security)
        ids: OrderedDict[str, None] = OrderedDict()
        try:
            await consumer.start()
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            position = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, position)
            while position < end:
                batch: Any = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
                for record in batch.get(tp, []):
                    for event_id in ids_of(record.key, record.value, record.headers):
                        ids[event_id] = None
                        if len(ids) > self._max_ids:
                            ids.popitem(last=False)
                position = await consumer.position(tp)
        finally:
            await consumer.stop()
        ids.update(self._ids.get(partition, {}))
        self._ids[partition] = ids
        self._failed.discard(partition)
        log.info("loaded %d processed event ids of %s[%d]", len(ids), self.topic, partition)


class ProcessedMarkers:
    """The processed ids of enriched events, written to the processed-ids topic in batches: one
    record per input partition every ``MARKER_LINGER`` seconds or ``MARKER_BATCH`` ids (best
    effort; a crash loses at most the last batch, see the module docstring).

        markers = ProcessedMarkers(processed_ids, send)
        markers.record(partition, event_id)     # remembered now, written with the next batch
        await markers.close(timeout)            # what is pending goes out
    """

    def __init__(self, processed: ProcessedIds, send: Callable[[OutboundRecord], Awaitable[Any]]) -> None:
        self._processed = processed
        self._send = send
        self._pending: dict[int, list[str]] = {}  # ids to write, by input partition
        self._timer: asyncio.TimerHandle | None = None
        self._sends: set[asyncio.Future[Any]] = set()

    def record(self, partition: int, event_id: str) -> None:
        """Remember the id locally now, and in the topic with the next batch of its partition."""
        self._processed.remember(partition, event_id)
        ids = self._pending.setdefault(partition, [])
        ids.append(event_id)
        if len(ids) >= MARKER_BATCH:
            self.flush(partition)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(MARKER_LINGER, self.flush)

    def flush(self, only: int | None = None) -> None:
        """Produce the pending ids: one record per input partition (or only ``only``'s)."""
        if only is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for partition in [only] if only is not None else list(self._pending):
            ids = self._pending.pop(partition, None)
            if not ids:
                continue
            value, headers = marker(ids)
            record = OutboundRecord(self._processed.topic, None, value, headers, ids[0], partition=partition)
            task = asyncio.ensure_future(self._send(record))
            task.add_done_callback(_log_marker_failure)
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def close(self, timeout: float) -> None:
        """Write what is pending and wait up to ``timeout`` seconds for the sends."""
        self.flush()
        if self._sends:
            await asyncio.wait(list(self._sends), timeout=timeout)


def _log_marker_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not record a processed event id: %s", task.exception())
