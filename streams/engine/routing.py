"""Routing: where a processed event goes, and the headers it carries there (docs/architecture.md §3).

Successful events go to the output topic; failed ones to the DLQ with the original value
bytes unchanged and the error headers, so that a replay is exact.

Headers are input too, and the input topic is written by others: every header value this
module writes is one line of valid UTF-8 of bounded length, and the hop headers that steer
routing (attempt, due time, origin) are believed only on records from our own retry tiers
(``admit_headers``), which only the worker's principal may write (docs/security.md).
"""

from __future__ import annotations

import re
from time import time

from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.retry import RetryTier
from streams.failures import Failure
from streams.names import Header, dlq_topic

# Headers the pipeline writes on its hops; on records from any other topic they are dropped.
HOP_HEADERS = frozenset({
    Header.ATTEMPT, Header.NOT_BEFORE, Header.ORIGIN_TOPIC, Header.ORIGIN_PARTITION, Header.ORIGIN_OFFSET,
    Header.ORIGIN_TIMESTAMP, Header.ERROR_KIND, Header.ERROR_CLASS, Header.ERROR_MESSAGE, Header.ERROR_CONNECTOR,
    Header.ERROR_STATUS, Header.FIRST_FAILURE_AT, Header.PARKED_BEHIND, Header.HOP,
})
MAX_HEADER_CHARS = 512  # any header value we write
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$")  # an event id fit for a header and a key
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_TRACEPARENT = re.compile(rb"^[\x21-\x7e]{1,128}$")  # any version's shape: printable ASCII, no spaces
_TRACESTATE = re.compile(rb"^[\x20-\x7e]{0,512}$")


def admit_headers(headers: dict[str, bytes], *, from_retry_tier: bool) -> dict[str, bytes]:
    """The headers of a consumed record as the engine may believe them.

    A producer to the input could otherwise set ``streams.not-before`` far ahead (its partition
    would be held), an origin partition that does not exist (every retry of it would fail to
    produce), or an attempt number past the last tier. Only retry tier records keep them.
    """
    if from_retry_tier:
        return headers
    return {name: value for name, value in headers.items() if name not in HOP_HEADERS}


def header_text(text: str, limit: int = MAX_HEADER_CHARS) -> bytes:
    """A header value: one line (control characters become spaces), valid UTF-8, ``limit`` chars at most."""
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text.encode()  # already one line of printable ASCII (event ids): nothing to change
    one_line = "".join(c if c.isprintable() else " " for c in text)
    one_line = one_line.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates → '?'
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "…"
    return one_line.encode("utf-8")


def _small_int(text: str | None, digits: int = 19) -> int | None:
    """A non-negative integer of at most ``digits`` digits, else None (never a huge int parse)."""
    if text is None or not 0 < len(text) <= digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def event_id_of(record: InboundRecord, event: dict[str, object] | None) -> str:
    """The stable id: the record's ``event_id`` field, else the header, else where it was first seen.

    A record that did not decode (``event`` None) is known only by where it was first seen: its
    ``event-id`` header is the producer's word, and a dead letter must not claim another event's id.
    """
    if event is None:
        return _origin(record)[0]
    value = event.get("event_id")
    if isinstance(value, str) and _SAFE_ID.match(value):
        return value
    header = record.header(Header.EVENT_ID)
    if header is not None and _SAFE_ID.match(header):
        return header
    return _origin(record)[0]  # an id we cannot put into a header safely: where it was first seen


def _origin(record: InboundRecord) -> tuple[str, list[tuple[str, bytes]]]:
    """Where the event first entered the pipeline: from the headers of a hop, else this record."""
    topic = record.header(Header.ORIGIN_TOPIC)
    numbers = [_small_int(record.header(h)) for h in (
        Header.ORIGIN_PARTITION, Header.ORIGIN_OFFSET, Header.ORIGIN_TIMESTAMP)]
    if topic is not None and _TOPIC.match(topic) and None not in numbers:
        partition, offset, timestamp = (str(n) for n in numbers)
    else:
        topic, partition, offset = record.topic, str(record.partition), str(record.offset)
        timestamp = str(record.timestamp_ms)
    headers = [
        (Header.ORIGIN_TOPIC, topic.encode()),
        (Header.ORIGIN_PARTITION, partition.encode()),
        (Header.ORIGIN_OFFSET, offset.encode()),
        (Header.ORIGIN_TIMESTAMP, timestamp.encode()),
    ]
    return f"{topic}:{partition}:{offset}", headers


def hop_of(record: InboundRecord) -> int | None:
    """How many times this copy of the event moved to a retry tier: 0 on the input; None on a
    retry tier record written before the hop header existed (its place among copies is unknown)."""
    if record.header(Header.ORIGIN_OFFSET) is None:  # hop headers are kept only from retry tiers
        return 0
    return _small_int(record.header(Header.HOP), digits=6)


def next_hop(record: InboundRecord) -> int:
    """The hop of the record this one becomes in a retry tier."""
    return (hop_of(record) or 0) + 1


def attempt_of(record: InboundRecord) -> int:
    """Which attempt this delivery is: 1 on the input, +1 per retry hop."""
    attempt = _small_int(record.header(Header.ATTEMPT), digits=3)
    return attempt if attempt is not None and attempt > 0 else 1


def _common_headers(record: InboundRecord, event_id: str, attempt: int | None = None) -> list[tuple[str, bytes]]:
    headers = []
    traceparent = record.headers.get(Header.TRACEPARENT)
    if traceparent is not None and _TRACEPARENT.match(traceparent):
        headers.append((Header.TRACEPARENT, traceparent))
        tracestate = record.headers.get(Header.TRACESTATE)
        if tracestate is not None and _TRACESTATE.match(tracestate):
            headers.append((Header.TRACESTATE, tracestate))
    headers.append((Header.EVENT_ID, header_text(event_id)))
    headers.append((Header.ATTEMPT, str(attempt if attempt is not None else attempt_of(record)).encode()))
    headers.extend(_origin(record)[1])
    return headers


def _error_headers(record: InboundRecord, failure: Failure, now_ms: int) -> list[tuple[str, bytes]]:
    headers = [
        (Header.ERROR_KIND, failure.kind.value.encode()),
        (Header.ERROR_CLASS, header_text(failure.error_class, 100)),
        (Header.ERROR_MESSAGE, header_text(failure.message)),
    ]
    if failure.connector is not None:
        headers.append((Header.ERROR_CONNECTOR, header_text(failure.connector, 100)))
    if failure.status is not None:
        headers.append((Header.ERROR_STATUS, str(failure.status).encode()))
    first = _small_int(record.header(Header.FIRST_FAILURE_AT))
    headers.append((Header.FIRST_FAILURE_AT, str(first if first is not None else now_ms).encode()))
    return headers


def origin_partition(record: InboundRecord) -> int:
    """The input partition the event first arrived on; retry hops keep to it."""
    partition = _small_int(record.header(Header.ORIGIN_PARTITION), digits=6)
    return partition if partition is not None else record.partition


def route_success(record: InboundRecord, output_topic: str, value: bytes, event_id: str) -> OutboundRecord:
    """The enriched record for the output topic, keyed like its input."""
    return OutboundRecord(output_topic, record.key, value, _common_headers(record, event_id), event_id)


def route_failure(
    record: InboundRecord, pipeline: str, failure: Failure, event_id: str, now_ms: int | None = None,
    behind: list[str] | None = None,
) -> OutboundRecord:
    """The dead-letter record: original key and value bytes, plus why it failed.

    ``behind`` (strict key order only): the event ids of later events of its key that were parked
    behind it and now go on without it, oldest first.
    """
    now_ms = now_ms if now_ms is not None else int(time() * 1000)
    headers = _common_headers(record, event_id) + _error_headers(record, failure, now_ms)
    if behind is not None:
        headers.append((Header.BEHIND_COUNT, str(len(behind)).encode()))
        if behind:
            headers.append((Header.BEHIND_IDS, header_text(",".join(behind))))
    return OutboundRecord(dlq_topic(pipeline), record.key, record.value, headers, event_id, failed=True,
                          error_kind=failure.kind.value)


def route_parked(record: InboundRecord, tier: RetryTier, behind: str, event_id: str,
                 now_ms: int | None = None) -> OutboundRecord:
    """Park an event behind an earlier one of its key in a retry tier; it has not failed."""
    now_ms = now_ms if now_ms is not None else int(time() * 1000)
    headers = _common_headers(record, event_id)
    headers.append((Header.NOT_BEFORE, str(now_ms + int(tier.delay * 1000)).encode()))
    headers.append((Header.PARKED_BEHIND, header_text(behind)))
    headers.append((Header.HOP, str(next_hop(record)).encode()))
    return OutboundRecord(tier.topic, record.key, record.value, headers, event_id, retry=True,
                          partition=origin_partition(record))


def origin_offset(record: InboundRecord) -> int:
    offset = _small_int(record.header(Header.ORIGIN_OFFSET))
    return offset if offset is not None else record.offset


def route_retry(
    record: InboundRecord, tier: RetryTier, failure: Failure, event_id: str, now_ms: int | None = None
) -> OutboundRecord:
    """The record for a delayed retry tier: original bytes, next attempt number, due time.

    It goes to the same partition number as the event's input partition: the tier topics have
    as many partitions as the input, so the worker that owns the key also owns its retries.
    """
    now_ms = now_ms if now_ms is not None else int(time() * 1000)
    headers = _common_headers(record, event_id, attempt_of(record) + 1)
    headers.append((Header.NOT_BEFORE, str(now_ms + int(tier.delay * 1000)).encode()))
    headers += _error_headers(record, failure, now_ms)
    headers.append((Header.HOP, str(next_hop(record)).encode()))
    return OutboundRecord(tier.topic, record.key, record.value, headers, event_id, retry=True,
                          partition=origin_partition(record), error_kind=failure.kind.value)
