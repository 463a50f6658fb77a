"""The bench's own Kafka I/O: fresh topics, preloading, the open-loop producer, the output watcher.

Output topics use ``message.timestamp.type=LogAppendTime``, so every output record carries the
broker's append time: throughput and latency are read from those stamps, not from when this
(busy, shared-CPU) process got around to reading a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.data import Dataset
from streams.kafka.clients import ensure_topics
from streams.names import Header

INTENDED_AT = "bench.intended-at"  # epoch ms the open-loop producer meant to send the record at
LOG_APPEND_TIME = 1  # aiokafka's timestamp_type for broker-stamped records


async def create_run_topics(bootstrap: str, input_topic: str, output_topic: str, partitions: int,
                            extra: dict[str, int] | None = None) -> None:
    await ensure_topics(bootstrap, {input_topic: partitions, **(extra or {})})
    await ensure_topics(bootstrap, {output_topic: partitions}, {"message.timestamp.type": "LogAppendTime"})


async def delete_topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    """Delete this run's topics (input, output, and whatever the contender made under its name)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


def _headers(event_id: str, intended_ms: int | None) -> list[tuple[str, bytes]]:
    headers = [(Header.EVENT_ID, event_id.encode())]
    if intended_ms is not None:
        headers.append((INTENDED_AT, str(intended_ms).encode()))
    return headers


def _producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms,
                            max_batch_size=256 * 1024, max_request_size=4 * 1024 * 1024)


async def preload(bootstrap: str, topic: str, data: Dataset) -> None:
    """Produce every event as fast as the broker takes them; return once all are acknowledged."""
    producer = _producer(bootstrap, linger_ms=20)
    await producer.start()
    try:
        pending: list[asyncio.Future[object]] = []
        for event_id, key, value in zip(data.event_ids, data.keys, data.values, strict=True):
            pending.append(await producer.send(topic, value, key=key, headers=_headers(event_id, None)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


@dataclass
class OpenLoopSchedule:
    """When each event of an open-loop run was meant to be sent (epoch seconds), by event id."""

    rate: float
    intended: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0
    behind_max_ms: float = 0.0  # how far the producer itself fell behind its schedule, at worst


async def produce_open_loop(bootstrap: str, topic: str, data: Dataset, rate: float) -> OpenLoopSchedule:
    """Send event i at ``start + i / rate`` whatever the pipeline does; stamp that time in a header.

    A pipeline that falls behind does not slow the producer down (no coordinated omission): its
    latency keeps growing instead, which is what a real upstream would do to it.
    """
    schedule = OpenLoopSchedule(rate)
    producer = _producer(bootstrap, linger_ms=1)
    await producer.start()
    try:
        pending: list[asyncio.Future[object]] = []
        start_mono = time.monotonic()
        start_wall = time.time()
        schedule.started_at = start_wall
        sent = 0
        total = len(data)
        while sent < total:
            elapsed = time.monotonic() - start_mono
            due = min(total, int(elapsed * rate) + 1)
            if due > sent:
                schedule.behind_max_ms = max(schedule.behind_max_ms, (elapsed - sent / rate) * 1000)
            while sent < due:
                intended = start_wall + sent / rate
                event_id = data.event_ids[sent]
                schedule.intended[event_id] = intended
                pending.append(await producer.send(topic, data.values[sent], key=data.keys[sent],
                                                   headers=_headers(event_id, int(intended * 1000))))
                sent += 1
            if len(pending) > 5000:
                done = [f for f in pending if f.done()]
                for future in done:
                    future.result()
                pending = [f for f in pending if not f.done()]
            await asyncio.sleep(max(0.0, start_mono + sent / rate - time.monotonic()))
        await asyncio.gather(*pending)
        schedule.finished_at = time.time()
        return schedule
    finally:
        await producer.stop()


class OutputWatcher:
    """Reads the output (and dead-letter) topics from the start, counting distinct event ids.

        async with OutputWatcher(bootstrap, [output, dlq]) as seen:
            ...  # seen.count, seen.first_ms, seen.last_ms, seen.appended_ms[event_id]

    ``keep_times`` keeps every event's append time (for latency); without it only the first
    and last append times and the ids are kept.
    """

    def __init__(self, bootstrap: str, topics: list[str], *, dead_letter_topics: tuple[str, ...] = (),
                 keep_times: bool = False) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.dead_letter_topics = set(dead_letter_topics)
        self.keep_times = keep_times
        self.ids: set[str] = set()
        self.appended_ms: dict[str, int] = {}
        self.dead_lettered = 0
        self.duplicates = 0
        self.records = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.at_first_ms = 0  # records appended in the very first millisecond seen
        self.broker_stamped = True
        self._task: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return len(self.ids)

    async def __aenter__(self) -> OutputWatcher:
        # read_committed: what a consumer of ours-eos sees (the same as read_uncommitted for the
        # contenders that write no transactions)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                    isolation_level="read_committed")
        await consumer.start()
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run(consumer))
        return self

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        event_id_header = Header.EVENT_ID
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
                for tp, records in batch.items():
                    dead = tp.topic in self.dead_letter_topics
                    for record in records:
                        self.records += 1
                        event_id = next((v.decode() for k, v in record.headers if k == event_id_header), None)
                        if event_id is None:
                            event_id = f"{tp.topic}:{tp.partition}:{record.offset}"
                        if event_id in self.ids:
                            self.duplicates += 1
                            continue
                        self.ids.add(event_id)
                        stamp = record.timestamp
                        if record.timestamp_type != LOG_APPEND_TIME:
                            self.broker_stamped = False
                            stamp = int(time.time() * 1000)
                        if dead:
                            self.dead_lettered += 1
                        if self.keep_times:
                            self.appended_ms[event_id] = stamp
                        if self.first_ms is None or stamp < self.first_ms:
                            self.first_ms, self.at_first_ms = stamp, 1
                        elif stamp == self.first_ms:
                            self.at_first_ms += 1
                        if self.last_ms is None or stamp > self.last_ms:
                            self.last_ms = stamp
        finally:
            await consumer.stop()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def has_failed(self) -> BaseException | None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None
