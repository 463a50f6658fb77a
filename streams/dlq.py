"""The dead-letter topic: list and inspect what failed, and replay it once the cause is fixed.

    letters = await read_dead_letters(bootstrap, "orders-enricher", DeadLetterFilter(kind="transient"))
    report = await replay(bootstrap, "orders-enricher", letters, target="orders", rate=100)

    async for letter in iter_dead_letters(bootstrap, "orders-enricher", DeadLetterFilter()):
        print(letter.ref)                # each one as it is read, the DLQ never held in memory

A replay produces each dead letter's original key and value bytes to the input topic (or
another), with its event id, origin and trace context, the error headers removed and a
``streams.replay-of`` header naming the dead letter. Each replayed dead letter is recorded in
the compacted topic ``<pipeline>.dlq.replayed`` (target, when, and who: ``replay(audit=...)``);
a later replay skips those, so running the same replay twice does not duplicate.

Exactly once, even when a replay is killed: the replayed records and their ledger entries are
written in ONE Kafka transaction per batch (up to ``_BATCH`` letters or ``_BATCH_SECONDS``),
by a producer whose transactional id is the pipeline's (``<pipeline>.dlq-replay``). A replay
that starts fences any earlier one still alive and aborts its open transaction before it reads
the ledger (read_committed), so a letter is either replayed and recorded, or neither. Readers
of the target topic must read committed (the aiokafka worker does) to never see an aborted
batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from streams.kafka.clients import ensure_topics, partition_count, producer
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


async def _existing_partitions(bootstrap: str, topic: str, *, security: Mapping[str, Any] | None = None) -> int:
    """How many partitions ``topic`` has; 0 if it does not exist, which it does not create.

    Metadata asked for a named topic (``partition_count``) has the broker create it where topics
    are created automatically; the list of all topics does not.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        exists = topic in await admin.list_topics()
    finally:
        await admin.close()
    return await partition_count(bootstrap, topic, security=security) if exists else 0


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
        count = await _existing_partitions(bootstrap, topic, security=security)
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


def replay_transactional_id(pipeline: str) -> str:
    """The transactional id of the pipeline's replays: one at a time, a new one fences the last."""
    return f"{pipeline}.dlq-replay"


async def replayed_refs(bootstrap: str, pipeline: str, *, security: Mapping[str, Any] | None = None,
                        create: bool = True, idle_timeout: float = 30.0) -> set[str]:
    """The dead letters a previous replay already produced: the committed entries of the ledger.

    Reads the ledger read_committed up to its last stable offset, so the entries of an aborted
    (or still open) transaction do not count. ``create=False`` creates no ledger topic (a
    missing one is empty). Raises TimeoutError if the ledger cannot be read to its end: a
    partial ledger would replay letters twice.
    """
    ledger = replay_ledger_topic(pipeline)
    if create:
        await ensure_topics(bootstrap, {ledger: 1}, config={"cleanup.policy": "compact"}, security=security)
    count = await _existing_partitions(bootstrap, ledger, security=security)
    if not count:
        return set()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed", **(security or {}))
    await consumer.start()
    try:
        tps = [TopicPartition(ledger, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
        refs: set[str] = set()
        last = time.monotonic()
        while remaining := [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() - last > idle_timeout:
                raise TimeoutError(f"replay ledger {ledger}: partitions {[tp.partition for tp in remaining]} "
                                   f"not read to their end offsets within {idle_timeout:.0f} s")
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=5000)
            if batch:
                last = time.monotonic()
            for records in batch.values():
                for r in records:
                    if r.key is None:
                        continue
                    if r.value is None:
                        refs.discard(r.key.decode())  # a tombstone: that letter may be replayed again
                    else:
                        refs.add(r.key.decode())
        return refs
    finally:
        await consumer.stop()


@dataclass
class ReplayReport:
    selected: int = 0
    replayed: int = 0
    skipped: int = 0  # replayed before
    refs: list[str] = field(default_factory=list)


class ReplayFencedError(RuntimeError):
    """Another replay of the same pipeline started: this one's open batch was aborted."""


_BATCH = 500  # letters per transaction at most
_BATCH_SECONDS = 1.0  # a transaction is committed at the latest this long after its first letter
_TRANSACTION_TIMEOUT_MS = 30_000  # the broker aborts a transaction its replay left open after this


class _Pace:
    """At most ``rate`` letters a second (a leaky bucket: a first burst of ``max(rate, 1)``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.level = 0.0
        self.checked = time.monotonic()

    def _leak(self) -> None:
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self.checked) * self.rate)
        self.checked = now

    def wait(self) -> float:
        """Seconds until one more letter may go."""
        self._leak()
        return max(0.0, (self.level + 1.0 - self.capacity) / self.rate)

    def take(self) -> None:
        self._leak()
        self.level += 1.0


async def replay(
    bootstrap: str, pipeline: str, letters: list[DeadLetter], *, target: str, rate: float, dry_run: bool = False,
    security: Mapping[str, Any] | None = None, progress: Progress | None = None,
    audit: Mapping[str, str] | None = None,
) -> ReplayReport:
    """Produce the selected dead letters to ``target`` at most ``rate`` per second, each exactly once.

    Each batch of letters and their ledger entries are one transaction (see the module's
    docstring); ``progress`` counts the letters committed (its total: the letters to replay).
    ``dry_run`` reads the ledger and writes nothing, not even a topic. Each ledger entry holds
    the target, when (``replayed_at``, epoch ms) and ``audit``: who asked and how (``by``,
    ``via``; the console adds the job and how its user signed in).
    """
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    report = ReplayReport(selected=len(letters))

    def plan(done: set[str]) -> list[DeadLetter]:
        todo = [letter for letter in letters if letter.ref not in done]
        report.skipped = len(letters) - len(todo)
        report.refs = [letter.ref for letter in todo]
        return todo

    if dry_run:
        plan(await replayed_refs(bootstrap, pipeline, security=security, create=False))
        return report
    if not letters:
        return report
    source = dlq_topic(pipeline)
    ledger = replay_ledger_topic(pipeline)
    await ensure_topics(bootstrap, {ledger: 1}, config={"cleanup.policy": "compact"}, security=security)
    async with producer(bootstrap, security=security, transactional_id=replay_transactional_id(pipeline),
                        transaction_timeout_ms=_TRANSACTION_TIMEOUT_MS) as client:
        in_transaction = False
        try:
            # The first transaction waits for the producer id, which fences an earlier replay and
            # aborts its open transaction: only then is what the ledger says final.
            await client.begin_transaction()
            in_transaction = True
            todo = plan(await replayed_refs(bootstrap, pipeline, security=security, create=False))
            if progress is not None and todo:
                progress.set_total(len(todo))
            pace = _Pace(rate)
            batch: list[asyncio.Future[Any]] = []
            batch_began = 0.0

            async def commit() -> None:
                nonlocal in_transaction
                await asyncio.gather(*batch)  # a failed send fails the batch, before it is committed
                await client.commit_transaction()
                in_transaction = False
                report.replayed += len(batch) // 2
                if progress is not None:
                    progress.advance(len(batch) // 2)
                batch.clear()

            for letter in todo:
                if batch and (len(batch) // 2 >= _BATCH
                              or time.monotonic() + pace.wait() - batch_began >= _BATCH_SECONDS):
                    await commit()  # full, or the next letter is due after the batch's time is up
                while (wait := pace.wait()) > 0:
                    await asyncio.sleep(wait)
                pace.take()
                if not in_transaction:
                    await client.begin_transaction()
                    in_transaction = True
                if not batch:
                    batch_began = time.monotonic()
                headers = [(name, letter.headers[name].encode()) for name in _KEPT if name in letter.headers]
                headers.append((Header.REPLAY_OF, f"{source}:{letter.ref}".encode()))
                entry = json.dumps({"target": target, "replayed_at": int(time.time() * 1000),
                                    **(audit or {})}).encode()
                batch.append(await client.send(target, letter.value, key=letter.key, headers=headers))
                batch.append(await client.send(ledger, entry, key=letter.ref.encode()))
            if batch:
                await commit()
        except (ProducerFenced, InvalidProducerEpoch) as exc:
            in_transaction = False  # a fenced producer can abort nothing; the broker did
            raise ReplayFencedError(
                f"another replay of {pipeline} started (transactional id {replay_transactional_id(pipeline)}) and "
                f"fenced this one: its last batch was aborted, {report.replayed} letters were replayed "
                f"({type(exc).__name__})") from None
        finally:
            if in_transaction:  # an empty first transaction, or a batch cut short: none of it counts
                with contextlib.suppress(Exception):
                    await client.abort_transaction()
    return report
