"""The dead-letter topic: list and inspect what failed, and replay it once the cause is fixed.

    letters = await read_dead_letters(bootstrap, "orders-enricher", DeadLetterFilter(kind="transient"))
    report = await replay(bootstrap, "orders-enricher", letters, target="orders", rate=100)

    async for letter in iter_dead_letters(bootstrap, "orders-enricher", DeadLetterFilter()):
        print(letter.ref)                # each one as it is read, the DLQ never held in memory

A replay produces each dead letter's original key and value bytes to the input topic (or
another), with its event id, origin and trace context, the error headers removed and a
``streams.replay-of`` header naming the dead letter. Each replayed dead letter is recorded in
the compacted topic ``<pipeline>.dlq.replayed``; a later replay skips those, so running the
same replay twice does not duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiolimiter import AsyncLimiter

from streams.kafka.clients import end_offsets, ensure_topics, partition_count, producer, read_records
from streams.names import Header, dlq_topic, replay_ledger_topic

if TYPE_CHECKING:
    from streams.progress import Progress

log = logging.getLogger("streams.dlq")

# Headers a replayed record keeps; the rest (errors, attempt, due time) start afresh.
_KEPT = (Header.TRACEPARENT, Header.TRACESTATE, Header.EVENT_ID, Header.ORIGIN_TOPIC, Header.ORIGIN_PARTITION,
         Header.ORIGIN_OFFSET, Header.ORIGIN_TIMESTAMP)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to select; every given criterion must hold."""

    kind: str | None = None
    error_class: str | None = None
    connector: str | None = None
    status: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    key: str | None = None
    refs: frozenset[str] = field(default_factory=frozenset)

    def matches(self, letter: DeadLetter) -> bool:
        failed_at = int(letter.header(Header.FIRST_FAILURE_AT) or letter.timestamp_ms)
        return (
            (self.kind is None or letter.header(Header.ERROR_KIND) == self.kind)
            and (self.error_class is None or letter.header(Header.ERROR_CLASS) == self.error_class)
            and (self.connector is None or letter.header(Header.ERROR_CONNECTOR) == self.connector)
            and (self.status is None or letter.header(Header.ERROR_STATUS) == str(self.status))
            and (self.since_ms is None or failed_at >= self.since_ms)
            and (self.until_ms is None or failed_at < self.until_ms)
            and (self.key is None or (letter.key or b"").decode("utf-8", "replace") == self.key)
            and (not self.refs or letter.ref in self.refs)
        )


async def read_dead_letters(bootstrap: str, pipeline: str, selection: DeadLetterFilter, *,
                            security: Mapping[str, Any] | None = None,
                            progress: Progress | None = None) -> list[DeadLetter]:
    """Every dead letter present now that matches, oldest first per partition."""
    return [letter async for letter in iter_dead_letters(bootstrap, pipeline, selection, security=security,
                                                         progress=progress)]


async def iter_dead_letters(bootstrap: str, pipeline: str, selection: DeadLetterFilter, *,
                            security: Mapping[str, Any] | None = None, progress: Progress | None = None,
                            idle_timeout: float = 5.0, deadline: float = 600.0) -> AsyncIterator[DeadLetter]:
    """Each dead letter present now that matches, as soon as it is read (oldest first per partition).

    Reads each partition of the DLQ from its first offset to its end offset as of the start;
    letters that arrive meanwhile are left for the next run. ``progress`` counts the letters
    read (its total: the letters present) and notes how many matched. Stops early, with a
    warning, if nothing arrives for ``idle_timeout`` seconds or after ``deadline`` seconds.
    """
    topic = dlq_topic(pipeline)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                **(security or {}))
    await consumer.start()
    try:
        count = await partition_count(bootstrap, topic, security=security)
        tps = [TopicPartition(topic, p) for p in range(count)]
        if not tps:
            return
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > firsts[tp]}
        if progress is not None:
            progress.set_total(sum(ends[tp] - firsts[tp] for tp in tps))
        if not remaining:
            return
        consumer.assign(sorted(remaining, key=lambda tp: tp.partition))
        for tp in remaining:
            consumer.seek(tp, firsts[tp])
        matched = 0
        begin = last = time.monotonic()
        while remaining:
            now = time.monotonic()
            if now - last > idle_timeout or now - begin > deadline:
                log.warning("dead letters of %s: stopped reading %s before their end offsets %s", pipeline,
                            sorted(tp.partition for tp in remaining), {tp.partition: ends[tp] for tp in remaining})
                return
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=500)
            if batch:
                last = time.monotonic()
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    letter = DeadLetter(r.partition, r.offset, r.timestamp, r.key, r.value,
                                        {k: v.decode("utf-8", "replace") for k, v in r.headers})
                    if progress is not None:
                        progress.advance()
                    if selection.matches(letter):
                        matched += 1
                        if progress is not None:
                            progress.note(f"{matched} matched")
                        yield letter
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def replayed_refs(bootstrap: str, pipeline: str, *, security: Mapping[str, Any] | None = None) -> set[str]:
    """The dead letters a previous replay already produced."""
    ledger = replay_ledger_topic(pipeline)
    await ensure_topics(bootstrap, {ledger: 1}, config={"cleanup.policy": "compact"}, security=security)
    ends = await end_offsets(bootstrap, ledger, security=security)
    total = sum(ends.values())
    if not total:
        return set()
    records = await read_records(bootstrap, [ledger], until=total, idle_timeout=5.0, deadline=60.0,
                                 security=security)
    return {r.key.decode() for r in records if r.key is not None and r.value is not None}


@dataclass
class ReplayReport:
    selected: int = 0
    replayed: int = 0
    skipped: int = 0  # replayed before
    refs: list[str] = field(default_factory=list)


_IN_FLIGHT = 256  # replayed letters produced but not acknowledged yet, at most


async def replay(
    bootstrap: str, pipeline: str, letters: list[DeadLetter], *, target: str, rate: float, dry_run: bool = False,
    security: Mapping[str, Any] | None = None, progress: Progress | None = None,
) -> ReplayReport:
    """Produce the selected dead letters to ``target`` at most ``rate`` per second, each once.

    A letter's ledger entry is produced only once the broker has acknowledged the letter on
    ``target``; up to ``_IN_FLIGHT`` letters are on their way meanwhile. ``progress`` counts the
    letters acknowledged (its total: the letters to replay).
    """
    report = ReplayReport(selected=len(letters))
    done = await replayed_refs(bootstrap, pipeline, security=security)
    todo = [letter for letter in letters if letter.ref not in done]
    report.skipped = len(letters) - len(todo)
    report.refs = [letter.ref for letter in todo]
    if dry_run or not todo:
        return report
    if progress is not None:
        progress.set_total(len(todo))
    limiter = AsyncLimiter(max(rate, 1.0), 1.0)
    source = dlq_topic(pipeline)
    ledger = replay_ledger_topic(pipeline)
    async with producer(bootstrap, security=security) as client:
        in_flight: deque[tuple[DeadLetter, asyncio.Future[Any]]] = deque()
        recorded: list[asyncio.Future[Any]] = []

        async def settle_oldest() -> None:
            letter, delivered = in_flight.popleft()
            await delivered  # on the target topic: only now may the ledger say so
            entry = json.dumps({"target": target, "replayed_at": int(time.time() * 1000)}).encode()
            recorded.append(await client.send(ledger, entry, key=letter.ref.encode()))
            report.replayed += 1
            if progress is not None:
                progress.advance()

        for letter in todo:
            await limiter.acquire()
            headers = [(name, letter.headers[name].encode()) for name in _KEPT if name in letter.headers]
            headers.append((Header.REPLAY_OF, f"{source}:{letter.ref}".encode()))
            in_flight.append((letter, await client.send(target, letter.value, key=letter.key, headers=headers)))
            if len(in_flight) >= _IN_FLIGHT:
                await settle_oldest()
        while in_flight:
            await settle_oldest()
        await asyncio.gather(*recorded)
    return report
