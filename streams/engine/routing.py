"""Routing: where a processed event goes, and the headers it carries there (DESIGN.md §3).

Successful events go to the output topic; failed ones to the DLQ with the original value
bytes unchanged and the error headers, so that a replay is exact.
"""

from __future__ import annotations

from time import time

from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.retry import RetryTier
from streams.failures import Failure
from streams.names import Header, dlq_topic

# Headers that travel with an event from its input record to every record made from it.
_CARRIED = (Header.TRACEPARENT, Header.TRACESTATE)


def event_id_of(record: InboundRecord, event: dict[str, object] | None) -> str:
    """The stable id: the record's ``event_id`` field, else the header, else where it was first seen."""
    if event is not None:
        value = event.get("event_id")
        if isinstance(value, str) and value:
            return value
    return record.header(Header.EVENT_ID) or _origin(record)[0]


def _origin(record: InboundRecord) -> tuple[str, list[tuple[str, bytes]]]:
    """Where the event first entered the pipeline: from the headers of a hop, else this record."""
    topic = record.header(Header.ORIGIN_TOPIC)
    if topic is not None:
        partition = record.header(Header.ORIGIN_PARTITION) or ""
        offset = record.header(Header.ORIGIN_OFFSET) or ""
        timestamp = record.header(Header.ORIGIN_TIMESTAMP) or ""
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


def attempt_of(record: InboundRecord) -> int:
    """Which attempt this delivery is: 1 on the input, +1 per retry hop."""
    attempt = record.header(Header.ATTEMPT)
    return int(attempt) if attempt and attempt.isdigit() and 0 < int(attempt) < 1000 else 1


def _common_headers(record: InboundRecord, event_id: str, attempt: int | None = None) -> list[tuple[str, bytes]]:
    headers = [(name, record.headers[name]) for name in _CARRIED if name in record.headers]
    headers.append((Header.EVENT_ID, event_id.encode()))
    headers.append((Header.ATTEMPT, str(attempt if attempt is not None else attempt_of(record)).encode()))
    headers.extend(_origin(record)[1])
    return headers


def _error_headers(record: InboundRecord, failure: Failure, now_ms: int) -> list[tuple[str, bytes]]:
    headers = [
        (Header.ERROR_KIND, failure.kind.value.encode()),
        (Header.ERROR_CLASS, failure.error_class.encode()),
        (Header.ERROR_MESSAGE, failure.message.encode("utf-8", errors="replace")),
    ]
    if failure.connector is not None:
        headers.append((Header.ERROR_CONNECTOR, failure.connector.encode()))
    if failure.status is not None:
        headers.append((Header.ERROR_STATUS, str(failure.status).encode()))
    first = record.header(Header.FIRST_FAILURE_AT)
    headers.append((Header.FIRST_FAILURE_AT, (first if first else str(now_ms)).encode()))
    return headers


def origin_partition(record: InboundRecord) -> int:
    """The input partition the event first arrived on; retry hops keep to it."""
    text = record.header(Header.ORIGIN_PARTITION)
    return int(text) if text is not None and text.isdigit() else record.partition


def route_success(record: InboundRecord, output_topic: str, value: bytes, event_id: str) -> OutboundRecord:
    """The enriched record for the output topic, keyed like its input."""
    return OutboundRecord(output_topic, record.key, value, _common_headers(record, event_id), event_id)


def route_failure(
    record: InboundRecord, pipeline: str, failure: Failure, event_id: str, now_ms: int | None = None
) -> OutboundRecord:
    """The dead-letter record: original key and value bytes, plus why it failed."""
    now_ms = now_ms if now_ms is not None else int(time() * 1000)
    headers = _common_headers(record, event_id) + _error_headers(record, failure, now_ms)
    return OutboundRecord(dlq_topic(pipeline), record.key, record.value, headers, event_id, failed=True)


def route_parked(record: InboundRecord, tier: RetryTier, behind: str, event_id: str,
                 now_ms: int | None = None) -> OutboundRecord:
    """Park an event behind an earlier one of its key in a retry tier; it has not failed."""
    now_ms = now_ms if now_ms is not None else int(time() * 1000)
    headers = _common_headers(record, event_id)
    headers.append((Header.NOT_BEFORE, str(now_ms + int(tier.delay * 1000)).encode()))
    headers.append((Header.PARKED_BEHIND, behind.encode()))
    return OutboundRecord(tier.topic, record.key, record.value, headers, event_id, retry=True,
                          partition=origin_partition(record))


def origin_offset(record: InboundRecord) -> int:
    text = record.header(Header.ORIGIN_OFFSET)
    return int(text) if text is not None and text.isdigit() else record.offset


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
    return OutboundRecord(tier.topic, record.key, record.value, headers, event_id, retry=True,
                          partition=origin_partition(record))
