"""The records that move through the engine: what came in, and what goes out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class InboundRecord:
    """A record as consumed, independent of the Kafka client that read it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def malformed_header_names(self) -> list[bytes]:
        """Header names that are not UTF-8, as their bytes (``streams.kafka.wire_records`` keeps them)."""
        return [name.encode("utf-8", "surrogateescape") for name in self.headers
                if not name.isascii() and not _is_utf8(name)]

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        if raw is None:
            return None
        return raw.decode("utf-8", errors="replace")


@dataclass(slots=True)
class OutboundRecord:
    """A record to produce: to the output, a retry tier or the DLQ."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    event_id: str
    failed: bool = False  # bound for the DLQ
    retry: bool = False  # bound for a retry tier
    partition: int | None = None  # None: the producer's partitioner decides by key
    error_kind: str | None = None  # why it is not an output: transient, permanent, poison; None when parked
    source: InboundRecord | None = None  # the consumed record it is the outcome of (set by the engine)

    @property
    def destination(self) -> str:
        """Where the event goes: ``output``, ``retry`` or ``dlq``."""
        return "dlq" if self.failed else "retry" if self.retry else "output"


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return False
    return True


# A client's record headers: aiokafka's sequence of pairs, or Faust's pairs or mapping (names as
# text, or as bytes where a reader kept them so); a value that is not bytes is taken as text.
RawHeaders = Mapping[str, object] | Mapping[bytes, object] | Iterable[tuple[str | bytes, object]] | None


def headers_from_kafka(raw: RawHeaders) -> dict[str, bytes]:
    """Normalize a client's headers (a list of pairs or a mapping) to a dict; last one wins.

    A name that is not UTF-8 stays as ``surrogateescape`` text, so that its bytes survive.
    """
    if not raw:
        return {}
    items: Iterable[tuple[str | bytes, object]] = raw.items() if isinstance(raw, Mapping) else raw
    result: dict[str, bytes] = {}
    for name, value in items:
        if isinstance(name, bytes):
            name = name.decode("utf-8", errors="surrogateescape")
        result[str(name)] = value if isinstance(value, bytes) else str(value).encode()
    return result
