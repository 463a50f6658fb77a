"""Names on the wire: topic names and Kafka header names (docs/architecture.md §3).

Every other module asks this one; no topic or header name is spelled anywhere else.
"""

from __future__ import annotations

import re

_DELAY = re.compile(r"^\d+(ms|s|m|h)$")


def dlq_topic(pipeline: str) -> str:
    """The dead-letter topic of a pipeline: ``orders-enricher.dlq``."""
    return f"{pipeline}.dlq"


def processed_topic(pipeline: str) -> str:
    """Event ids the pipeline enriched, partitioned like the input; detects duplicates."""
    return f"{pipeline}.processed"


def replay_ledger_topic(pipeline: str) -> str:
    """Compacted topic recording which dead letters were replayed, so a replay runs once."""
    return f"{pipeline}.dlq.replayed"


def workers_topic(pipeline: str) -> str:
    """Compacted topic each worker of a pipeline announces its state to, for the console."""
    return f"{pipeline}.workers"


def retry_topic(pipeline: str, delay: str) -> str:
    """A delayed retry tier of a pipeline, e.g. ``orders-enricher.retry.5s``.

    Tiers belong to the pipeline, not to the input topic, so that another consumer group
    reading the input never sees our retries.
    """
    if not _DELAY.match(delay):
        raise ValueError(f"retry delay {delay!r} must look like 500ms, 5s, 1m or 2h")
    return f"{pipeline}.retry.{delay}"


class Header:
    """Kafka header names the pipeline writes. Values are UTF-8 strings."""

    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    EVENT_ID = "event-id"
    ATTEMPT = "streams.attempt"
    NOT_BEFORE = "streams.not-before"
    ORIGIN_TOPIC = "streams.origin.topic"
    ORIGIN_PARTITION = "streams.origin.partition"
    ORIGIN_OFFSET = "streams.origin.offset"
    ORIGIN_TIMESTAMP = "streams.origin.timestamp"
    ERROR_KIND = "streams.error.kind"
    ERROR_CLASS = "streams.error.class"
    ERROR_MESSAGE = "streams.error.message"
    ERROR_CONNECTOR = "streams.error.connector"
    ERROR_STATUS = "streams.error.status"
    FIRST_FAILURE_AT = "streams.first-failure-at"
    PARKED_BEHIND = "streams.parked-behind"  # event id a strictly ordered event waits behind
    HOP = "streams.hop"  # how many times the event moved to a retry tier (retried or parked); 0 on the input
    # On a dead letter with strict key order: how many later events of its key were parked behind
    # it (and go on without it), and their event ids (comma-separated, cut at 512 characters).
    BEHIND_COUNT = "streams.behind.count"
    BEHIND_IDS = "streams.behind.event-ids"
    REPLAY_OF = "streams.replay-of"  # <dlq topic>:<partition>:<offset> of the replayed dead letter
