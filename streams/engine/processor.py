"""Decode → process → route → encode, for one event. Never raises for a bad event.

The outcome is one outbound record: the enriched record for the output topic, or the
original bytes for a retry tier (transient failure, tiers left) or the DLQ (everything else);
or None for a duplicate that is dropped or an event the pipeline filtered out. Events of one
key never run concurrently (the scheduler's lanes), which the strict-order parking relies on
(``streams.engine.parking``: an event first waits for its partition's parking state, is
acknowledged without processing if it is a stale copy, or is parked behind its key's oldest
outstanding event).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.context import current_event_id
from connectors.errors import CircuitOpenError
from streams.engine.dedupe import DedupeMode, ProcessedIds
from streams.engine.parking import KeyParking, PartitionParking
from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.retry import RetryPolicy
from streams.engine.routing import (
    attempt_of,
    event_id_of,
    hop_of,
    next_hop,
    origin_offset,
    origin_partition,
    route_failure,
    route_parked,
    route_retry,
    route_success,
)
from streams.failures import FailureKind, ValidationError, classify
from streams.serde.avro import AvroSerde
from streams.serde.wire import WireFormatError
from streams.telemetry import bind_event

# A dead letter carries the record's value; past this the worker's producer (1,000,000-byte
# requests) could not send it, so an oversized record's dead letter carries no value (the
# original stays in the input at its origin offset) rather than stopping the worker for good.
MAX_DEAD_LETTER_VALUE = 900_000


class Pipeline(Protocol):
    """What the processor needs from a pipeline (``streams.Pipeline`` is one): its subjects and
    ``process``, which returns the output record or None (filtered) and raises what fails the event."""

    input_subject: str
    output_subject: str

    async def process(self, event: dict[str, Any]) -> dict[str, Any] | None: ...


class RecordTooLarge(WireFormatError):
    """An input value larger than ``max_record_bytes``: poison, dead-lettered without decoding it."""


class MalformedHeader(WireFormatError):
    """A header name that is not UTF-8: the record breaks the Kafka protocol; poison."""


class OutputTooLarge(ValidationError):
    """The encoded output is larger than ``max_record_bytes``: permanent (the API said too much)."""


class BreakerOpen(Exception):
    """A required connector's circuit is open: the engine pauses consumption until it closes.

    Routing such an event to a retry tier would only flood the tiers with events that cannot
    succeed yet; waiting in its lane keeps its key's order too.
    """

    def __init__(self, breaker: object, connector: str) -> None:
        super().__init__(f"the circuit of connector {connector} is open")
        self.breaker = breaker
        self.connector = connector


@dataclass
class ProcessingStats:
    """Counts of outcomes since start; the worker logs them and metrics read them."""

    processed: int = 0
    enriched: int = 0
    retried: int = 0
    dead_lettered: int = 0
    parked: int = 0
    blocked: int = 0  # attempts that met an open circuit and waited for it
    duplicates: int = 0
    dropped_duplicates: int = 0
    filtered: int = 0  # the pipeline's output builder returned None
    stale: int = 0  # strict key order: older copies of an event whose newer record is in a retry tier
    by_kind: dict[str, int] = field(default_factory=dict)


class EventProcessor:
    def __init__(
        self,
        pipeline: Pipeline,
        serde: AvroSerde,
        *,
        pipeline_name: str,
        output_topic: str,
        retry: RetryPolicy,
        processed_ids: ProcessedIds | None = None,
        strict_key_order: bool = False,
        parking: KeyParking | None = None,
        max_record_bytes: int | None = None,
    ) -> None:
        """``parking``: where strict key order keeps its state (``strict_key_order`` without it: in
        memory only, never rebuilt; the runtimes pass one that rebuilds from the retry tiers)."""
        self._max_record_bytes = max_record_bytes
        self._pipeline = pipeline
        self._serde = serde
        self._name = pipeline_name
        self._output_topic = output_topic
        self._retry = retry
        self._processed = processed_ids
        self._parking = (parking or KeyParking()) if strict_key_order else None
        self.stats = ProcessingStats()
        self.on_duplicate: Callable[[], None] | None = None  # told of each duplicate found
        self.on_filtered: Callable[[], None] | None = None  # told of each event the pipeline dropped

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    async def process(self, record: InboundRecord) -> OutboundRecord | None:
        self.stats.processed += 1
        # Before anything that could settle it: the partition's parking state, rebuilt once.
        parking = None
        if self._parking is not None and record.key is not None:
            parking = await self._parking.partition(origin_partition(record))
        return await self._process(record, parking)

    async def _process(self, record: InboundRecord, parking: PartitionParking | None) -> OutboundRecord | None:
        size = len(record.value or b"")
        if self._max_record_bytes is not None and size > self._max_record_bytes:  # before any parsing
            outbound = self._failed(record, parking, RecordTooLarge(
                f"record value of {size} bytes exceeds max_record_bytes={self._max_record_bytes}"
                + ("; too large to keep in the dead letter, the original stays at its origin offset"
                   if size > MAX_DEAD_LETTER_VALUE else "")), event_id_of(record, None))
            if size > MAX_DEAD_LETTER_VALUE:
                outbound.value = None
            return outbound
        malformed = record.malformed_header_names()
        if malformed:
            names = ", ".join(repr(name) for name in malformed)
            what = "header name {} is" if len(malformed) == 1 else "header names {} are"
            return self._failed(record, parking, MalformedHeader(f"{what.format(names)} not UTF-8"),
                                event_id_of(record, None))
        try:
            event, source = self._serde.decode_with_source(record.value, self._pipeline.input_subject)
        except Exception as exc:  # noqa: BLE001 - every decode failure is poison, routed
            return self._failed(record, parking, exc, event_id_of(record, None))
        event_id = event_id_of(record, event)
        if parking is not None and parking.is_stale(_key(record), origin_offset(record), hop_of(record)):
            self.stats.stale += 1  # acknowledged: the event's live record carries on (see parking.py)
            return None
        if self._processed is not None and self._processed.seen(origin_partition(record), event_id):
            self.stats.duplicates += 1
            if self.on_duplicate is not None:
                self.on_duplicate()
            if self._processed.mode is DedupeMode.DROP:
                self.stats.dropped_duplicates += 1
                self._settle(record, parking)  # enriched before: later events of its key need not wait for it
                return None
        parked = self._park_if_behind(record, parking, event_id)
        if parked is not None:
            return parked
        token = current_event_id.set(event_id)
        try:
            with bind_event(event_id=event_id):
                enriched = await self._pipeline.process(event)
            if enriched is None:  # filtered: acknowledged, nothing produced
                self.stats.filtered += 1
                if self.on_filtered is not None:
                    self.on_filtered()
                self._settle(record, parking)
                return None
            value = self._serde.encode_based_on(self._pipeline.output_subject, enriched, source)
            if self._max_record_bytes is not None and len(value) > self._max_record_bytes:
                raise OutputTooLarge(f"encoded output of {len(value)} bytes exceeds "
                                     f"max_record_bytes={self._max_record_bytes}")
        except CircuitOpenError as exc:
            if exc.breaker is None:
                return self._failed(record, parking, exc, event_id)
            self.stats.blocked += 1
            self.stats.processed -= 1  # it is processed again when the circuit closes
            raise BreakerOpen(exc.breaker, exc.connector) from exc
        except Exception as exc:  # noqa: BLE001 - classified and routed, never lost
            return self._failed(record, parking, exc, event_id)
        finally:
            current_event_id.reset(token)
        self.stats.enriched += 1
        self._settle(record, parking)
        return route_success(record, self._output_topic, value, event_id)

    def forget_parking(self) -> None:
        """A rebalance or shutdown began: each partition's parking state is rebuilt from the retry
        tiers when its next event is processed (see parking.py)."""
        if self._parking is not None:
            self._parking.forget()

    def _failed(self, record: InboundRecord, parking: PartitionParking | None, exc: Exception,
                event_id: str) -> OutboundRecord:
        failure = classify(exc)
        self.stats.by_kind[failure.kind.value] = self.stats.by_kind.get(failure.kind.value, 0) + 1
        if failure.kind is FailureKind.TRANSIENT:
            attempt = attempt_of(record)
            tier = self._retry.tier_after(attempt)
            if tier is not None:
                self.stats.retried += 1
                if parking is not None:
                    parking.park(_key(record), origin_offset(record), event_id, attempt - 1, next_hop(record))
                return route_retry(record, tier, failure, event_id)
        self.stats.dead_lettered += 1
        behind = None
        if parking is not None:  # the events parked behind it go on without it: its dead letter says which
            behind = [entry.event_id for entry in parking.behind(_key(record), origin_offset(record))]
        self._settle(record, parking)
        return route_failure(record, self._name, failure, event_id, behind=behind)

    def _park_if_behind(self, record: InboundRecord, parking: PartitionParking | None,
                        event_id: str) -> OutboundRecord | None:
        if parking is None:
            return None
        key = _key(record)
        blocker = parking.blocker(key, origin_offset(record))
        if blocker is None:
            return None
        tier = self._retry.tiers[blocker.tier]
        parking.park(key, origin_offset(record), event_id, blocker.tier, next_hop(record))
        self.stats.parked += 1
        return route_parked(record, tier, blocker.event_id, event_id)

    @staticmethod
    def _settle(record: InboundRecord, parking: PartitionParking | None) -> None:
        if parking is not None:
            parking.settle(_key(record), origin_offset(record), hop_of(record))


def _key(record: InboundRecord) -> bytes:
    assert record.key is not None  # parking is None for records without a key
    return record.key
