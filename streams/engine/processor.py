"""Decode → process → route → encode, for one event. Never raises for a bad event.

The outcome is one outbound record: the enriched record for the output topic, or the
original bytes for a retry tier (transient failure, tiers left) or the DLQ (everything else).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.context import current_event_id
from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.retry import RetryPolicy
from streams.engine.routing import attempt_of, event_id_of, route_failure, route_retry, route_success
from streams.failures import FailureKind, classify
from streams.pipelines.base import Pipeline
from streams.serde.avro import AvroSerde


@dataclass
class ProcessingStats:
    """Counts of outcomes since start; the worker logs them and metrics read them."""

    processed: int = 0
    enriched: int = 0
    retried: int = 0
    dead_lettered: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class EventProcessor:
    def __init__(
        self, pipeline: Pipeline, serde: AvroSerde, *, pipeline_name: str, output_topic: str, retry: RetryPolicy
    ) -> None:
        self._pipeline = pipeline
        self._serde = serde
        self._name = pipeline_name
        self._output_topic = output_topic
        self._retry = retry
        self.stats = ProcessingStats()

    async def process(self, record: InboundRecord) -> OutboundRecord:
        self.stats.processed += 1
        try:
            event = self._serde.decode(record.value, self._pipeline.input_subject)
        except Exception as exc:  # noqa: BLE001 - every decode failure is poison, routed
            return self._failed(record, exc, event_id_of(record, None))
        event_id = event_id_of(record, event)
        token = current_event_id.set(event_id)
        try:
            enriched = await self._pipeline.process(event)
            value = self._serde.encode(self._pipeline.output_subject, enriched)
        except Exception as exc:  # noqa: BLE001 - classified and routed, never lost
            return self._failed(record, exc, event_id)
        finally:
            current_event_id.reset(token)
        self.stats.enriched += 1
        return route_success(record, self._output_topic, value, event_id)

    def _failed(self, record: InboundRecord, exc: Exception, event_id: str) -> OutboundRecord:
        failure = classify(exc)
        self.stats.by_kind[failure.kind.value] = self.stats.by_kind.get(failure.kind.value, 0) + 1
        if failure.kind is FailureKind.TRANSIENT:
            tier = self._retry.tier_after(attempt_of(record))
            if tier is not None:
                self.stats.retried += 1
                return route_retry(record, tier, failure, event_id)
        self.stats.dead_lettered += 1
        return route_failure(record, self._name, failure, event_id)
