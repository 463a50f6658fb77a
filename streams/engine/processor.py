"""Decode → process → route → encode for a batch of records, keyed lanes running concurrently.

Records with the same key run one after another in offset order; different keys run
concurrently, at most ``max_in_flight`` at a time. The result lists one outbound record per
inbound record, in input order: the caller produces them and only then acknowledges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.routing import event_id_of, route_failure, route_success
from streams.failures import classify
from streams.pipelines.base import Pipeline
from streams.serde.avro import AvroSerde


class BatchProcessor:
    """Turns inbound records into outbound ones; never raises for a bad event."""

    def __init__(
        self, pipeline: Pipeline, serde: AvroSerde, *, pipeline_name: str, output_topic: str, max_in_flight: int
    ) -> None:
        self._pipeline = pipeline
        self._serde = serde
        self._name = pipeline_name
        self._output_topic = output_topic
        self._slots = asyncio.Semaphore(max_in_flight)
        self.in_flight = 0
        self.peak_in_flight = 0

    async def run(self, records: Sequence[InboundRecord]) -> list[OutboundRecord]:
        results: list[OutboundRecord | None] = [None] * len(records)
        lanes: dict[bytes | None, list[int]] = {}
        for index, record in enumerate(records):
            lanes.setdefault(record.key, []).append(index)

        async def run_lane(indices: list[int]) -> None:
            for index in indices:
                results[index] = await self._one(records[index])

        await asyncio.gather(*(run_lane(indices) for indices in lanes.values()))
        return [r for r in results if r is not None]

    async def _one(self, record: InboundRecord) -> OutboundRecord:
        try:
            event = self._serde.decode(record.value, self._pipeline.input_subject)
        except Exception as exc:  # noqa: BLE001 - every decode failure is poison, routed
            return route_failure(record, self._name, classify(exc), event_id_of(record, None))
        event_id = event_id_of(record, event)
        async with self._slots:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                enriched = await self._pipeline.process(event)
                value = self._serde.encode(self._pipeline.output_subject, enriched)
            except Exception as exc:  # noqa: BLE001 - classified and routed, never lost
                return route_failure(record, self._name, classify(exc), event_id)
            finally:
                self.in_flight -= 1
        return route_success(record, self._output_topic, value, event_id)
