"""What the console knows: the workers' announcements, the group's lag, the DLQ's size.

    view = PipelineView(settings, console_settings)
    await view.start()                  # tails <pipeline>.workers from its beginning
    overview = await view.overview()    # workers, APIs, pauses, lag per partition, DLQ size
    await view.stop()

Everything comes from Kafka, over one consumer (no group: it commits nothing and joins no
group) and one admin client kept open: the workers' last records (``streams.announce``), the
group's committed offsets (the group is the pipeline's name) and the end offsets of the input,
of every retry tier and of the DLQ. Lag is end offset minus committed offset per partition; a
partition the group never committed counts from its first offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.console.settings import ConsoleSettings
from streams.engine.retry import RetryPolicy
from streams.names import dlq_topic, workers_topic
from streams.security import kafka_security
from streams.settings import Settings, pipeline_names

log = logging.getLogger("streams.console")

FORGET_AFTER_S = 3600.0  # workers whose last record is older than this are not listed at all


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker as its last announcement tells, and whether it is still there."""

    record: Mapping[str, Any]
    status: str  # running, gone (no announcement within the timeout) or stopped (said so)
    age_s: float  # seconds since its last announcement

    @property
    def id(self) -> str:
        return str(self.record.get("id", "?"))

    @property
    def partitions(self) -> list[tuple[str, int]]:
        return [(str(t), int(p)) for t, p in self.record.get("partitions", [])]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    first: int
    end: int
    committed: int | None  # None: the group never committed this partition
    owner: str | None

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed if self.committed is not None else self.first))


@dataclass(frozen=True, slots=True)
class ApiView:
    """An API across the live workers: open if any worker's breaker is open."""

    name: str
    state: str  # closed, half_open, open, or unknown (no live worker reports a breaker)
    since_ms: int | None
    by_worker: dict[str, str]
    limiter: dict[str, dict[str, float]]


@dataclass
class Overview:
    pipeline: str
    input_topic: str
    tiers: list[str]
    dlq: str
    workers: list[WorkerView]
    apis: list[ApiView]
    paused: list[tuple[str, str, int, str]]  # worker, topic, partition, why
    lag: list[PartitionLag]
    dlq_records: int
    at_ms: int
    took_s: float
    problems: list[str] = field(default_factory=list)

    @property
    def live(self) -> list[WorkerView]:
        return [w for w in self.workers if w.status == "running"]

    def total_lag(self, topic: str) -> int:
        return sum(p.lag for p in self.lag if p.topic == topic)

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline, "input_topic": self.input_topic, "tiers": self.tiers, "dlq": self.dlq,
            "at_ms": self.at_ms, "took_s": round(self.took_s, 4), "problems": self.problems,
            "workers": [{"status": w.status, "age_s": round(w.age_s, 1), **w.record} for w in self.workers],
            "apis": [{"name": a.name, "state": a.state, "since_ms": a.since_ms, "by_worker": a.by_worker,
                      "limiter": a.limiter} for a in self.apis],
            "paused": [{"worker": w, "topic": t, "partition": p, "why": why} for w, t, p, why in self.paused],
            "lag": [{"topic": p.topic, "partition": p.partition, "end": p.end, "committed": p.committed,
                     "lag": p.lag, "owner": p.owner} for p in self.lag],
            "dlq_records": self.dlq_records,
        }


class PipelineView:
    def __init__(self, settings: Settings, console: ConsoleSettings) -> None:
        names = pipeline_names(settings)
        self.settings = settings
        self.console = console
        self.pipeline = names.pipeline
        self.input_topic = names.input_topic
        self.tiers = RetryPolicy(names.pipeline, settings.retry_delay_list).topics
        self.dlq = dlq_topic(names.pipeline)
        self.workers_topic = workers_topic(names.pipeline)
        self._security = kafka_security(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._workers: dict[str, tuple[dict[str, Any], float]] = {}  # id -> (record, wall time it counts from)
        self._tail: asyncio.Task[None] | None = None
        self._cached: Overview | None = None
        self._computing: asyncio.Task[Overview] | None = None

    async def start(self) -> None:
        bootstrap = self.settings.kafka_bootstrap_servers
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **self._security)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **self._security)
        await self._consumer.start()
        await self._admin.start()
        self._tail = asyncio.create_task(self._tail_workers(), name="console-workers")

    async def stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _tail_workers(self) -> None:
        """Read the workers topic from its beginning, then follow it (its own consumer: the shared
        one serves offset requests meanwhile)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                    enable_auto_commit=False, auto_offset_reset="earliest", **self._security)
        await consumer.start()
        try:
            while not await self._assign_workers_topic(consumer):
                await asyncio.sleep(2.0)  # no worker has announced yet: the topic does not exist
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batch.values():
                    for r in records:
                        self._take(r.key, r.value)
        finally:
            await consumer.stop()

    async def _assign_workers_topic(self, consumer: AIOKafkaConsumer) -> bool:
        count = (await self._partition_counts([self.workers_topic]))[self.workers_topic]
        if not count:
            return False
        tps = [TopicPartition(self.workers_topic, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return True

    async def _partition_counts(self, topics: list[str]) -> dict[str, int]:
        """Partitions of each topic, 0 for one that does not exist (which is not created)."""
        assert self._admin is not None
        existing = set(await self._admin.list_topics())
        present = [topic for topic in topics if topic in existing]
        described = await self._admin.describe_topics(present) if present else []
        found = {entry["topic"]: len(entry["partitions"]) for entry in described if entry.get("error_code", 0) == 0}
        return {topic: found.get(topic, 0) for topic in topics}

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        worker = key.decode("utf-8", "replace")
        if value is None:
            self._workers.pop(worker, None)
            return
        try:
            record = json.loads(value)
        except ValueError:
            log.warning("workers topic %s: record of %r is not JSON; ignored", self.workers_topic, worker)
            return
        if isinstance(record, dict):
            # Its age counts from the worker's own clock (at_ms): records read at start-up are old.
            self._workers[worker] = (record, min(time.time(), int(record.get("at_ms", 0)) / 1000))

    def workers(self) -> list[WorkerView]:
        now = time.time()
        views = []
        for record, at in self._workers.values():
            age = max(0.0, now - at)
            if age > FORGET_AFTER_S:
                continue
            status = ("stopped" if record.get("state") == "stopped"
                      else "gone" if age > self.console.gone_after else "running")
            views.append(WorkerView(record, status, age))
        order = {"running": 0, "gone": 1, "stopped": 2}
        return sorted(views, key=lambda w: (order[w.status], str(w.record.get("host")), w.id))

    async def overview(self) -> Overview:
        """The overview, computed at most once per ``STREAMS_CONSOLE_REFRESH`` for every caller."""
        cached = self._cached
        if cached is not None and time.time() * 1000 - cached.at_ms < self.console.refresh * 1000 / 2:
            return cached
        if self._computing is None or self._computing.done():
            self._computing = asyncio.create_task(self.compute())
        overview = await asyncio.shield(self._computing)
        self._cached = overview
        return overview

    async def compute(self) -> Overview:
        """The overview read now (``overview`` shares one among callers)."""
        began = time.perf_counter()
        workers = self.workers()
        live = [w for w in workers if w.status == "running"]
        problems: list[str] = []
        lag: list[PartitionLag] = []
        dlq_records = 0
        try:
            lag, dlq_records = await self._offsets(live)
        except Exception as exc:  # noqa: BLE001 - shown on the page; the workers' view stands alone
            problems.append(f"offsets not read: {type(exc).__name__}: {exc}")
        return Overview(
            pipeline=self.pipeline, input_topic=self.input_topic, tiers=self.tiers, dlq=self.dlq, workers=workers,
            apis=_apis(live), paused=[(w.id, str(t), int(p), str(why)) for w in live
                                      for t, p, why in w.record.get("paused", [])],
            lag=lag, dlq_records=dlq_records, at_ms=int(time.time() * 1000),
            took_s=time.perf_counter() - began, problems=problems)

    async def _offsets(self, live: list[WorkerView]) -> tuple[list[PartitionLag], int]:
        assert self._consumer is not None and self._admin is not None
        consumer, admin = self._consumer, self._admin
        watched = [self.input_topic, *self.tiers]
        counts = await self._partition_counts([*watched, self.dlq])
        tps = [TopicPartition(t, p) for t in watched for p in range(counts[t])]
        dlq_tps = [TopicPartition(self.dlq, p) for p in range(counts[self.dlq])]
        ends, firsts, committed = await asyncio.gather(
            consumer.end_offsets(tps + dlq_tps), consumer.beginning_offsets(tps + dlq_tps),
            admin.list_consumer_group_offsets(self.pipeline))
        owners = {tp: w.id for w in live for tp in w.partitions}
        lag = []
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else None
            lag.append(PartitionLag(tp.topic, tp.partition, firsts[tp], ends[tp], done,
                                    owners.get((tp.topic, tp.partition))))
        return lag, sum(ends[tp] - firsts[tp] for tp in dlq_tps)


def _apis(live: list[WorkerView]) -> list[ApiView]:
    rank = {"open": 3, "half_open": 2, "closed": 1}
    names = sorted({name for w in live for name in w.record.get("apis", {})})
    views = []
    for name in names:
        by_worker: dict[str, str] = {}
        limiter: dict[str, dict[str, float]] = {}
        since: dict[str, int] = {}
        for w in live:
            entry = w.record.get("apis", {}).get(name)
            if not isinstance(entry, dict):
                continue
            if "breaker" in entry:
                by_worker[w.id] = str(entry["breaker"])
                since[w.id] = int(entry.get("breaker_since_ms") or 0)
            if isinstance(entry.get("limiter"), dict):
                limiter[w.id] = entry["limiter"]
        state = max(by_worker.values(), key=lambda s: rank.get(s, 0), default="unknown")
        in_state = [since[w] for w, s in by_worker.items() if s == state and since.get(w)]
        views.append(ApiView(name, state, min(in_state) if in_state else None, by_worker, limiter))
    return views
