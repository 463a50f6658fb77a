"""The dead-letter topic: list and inspect what failed, and replay it once the cause is fixed.

    letters = await read_dead_letters(bootstrap, "orders-enricher", DeadLetterFilter(kind="transient"))
    report = await replay(bootstrap, "orders-enricher", letters, target="orders", rate=100)

A replay produces each dead letter's original key and value bytes to the input topic (or
another), with its event id, origin and trace context, the error headers removed and a
``streams.replay-of`` header naming the dead letter. Each replayed dead letter is recorded in
the compacted topic ``<pipeline>.dlq.replayed``; a later replay skips those, so running the
same replay twice does not duplicate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter

from streams.kafka.clients import end_offsets, ensure_topics, producer, read_records
from streams.names import Header, dlq_topic, replay_ledger_topic

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
                            security: Mapping[str, Any] | None = None) -> list[DeadLetter]:
    """Every dead letter present now that matches, oldest first per partition."""
    topic = dlq_topic(pipeline)
    ends = await end_offsets(bootstrap, topic, security=security)
    total = sum(ends.values())
    if not total:
        return []
    records = await read_records(bootstrap, [topic], until=total, idle_timeout=5.0, deadline=120.0,
                                 security=security)
    letters = [
        DeadLetter(r.partition, r.offset, r.timestamp, r.key, r.value,
                   {k: v.decode("utf-8", "replace") for k, v in r.headers})
        for r in records if r.offset < ends.get(r.partition, 0)
    ]
    return [letter for letter in letters if selection.matches(letter)]


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


async def replay(
    bootstrap: str, pipeline: str, letters: list[DeadLetter], *, target: str, rate: float, dry_run: bool = False,
    security: Mapping[str, Any] | None = None,
) -> ReplayReport:
    """Produce the selected dead letters to ``target`` at most ``rate`` per second, each once."""
    report = ReplayReport(selected=len(letters))
    done = await replayed_refs(bootstrap, pipeline, security=security)
    todo = [letter for letter in letters if letter.ref not in done]
    report.skipped = len(letters) - len(todo)
    report.refs = [letter.ref for letter in todo]
    if dry_run or not todo:
        return report
    limiter = AsyncLimiter(max(rate, 1.0), 1.0)
    source = dlq_topic(pipeline)
    ledger = replay_ledger_topic(pipeline)
    async with producer(bootstrap, security=security) as client:
        for letter in todo:
            await limiter.acquire()
            headers = [(name, letter.headers[name].encode()) for name in _KEPT if name in letter.headers]
            headers.append((Header.REPLAY_OF, f"{source}:{letter.ref}".encode()))
            await (await client.send(target, letter.value, key=letter.key, headers=headers))
            entry = json.dumps({"target": target, "replayed_at": int(time.time() * 1000)}).encode()
            await (await client.send(ledger, entry, key=letter.ref.encode()))
            report.replayed += 1
    return report
