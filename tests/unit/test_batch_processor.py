"""The batch processor: keyed lanes in offset order, bounded concurrency, nothing dropped."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from connectors.errors import PermanentError
from streams.engine.processor import BatchProcessor
from streams.engine.records import InboundRecord
from streams.names import Header
from streams.pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from streams.samples import sample_orders
from streams.serde import AvroSerde, EmbeddedRegistry


class SlowEnricher:
    """A pipeline whose calls take random time, recording the order it saw per customer."""

    input_subject = ORDER_PLACED
    output_subject = ENRICHED_ORDER

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}
        self.active = 0
        self.peak = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def process(self, event: dict[str, Any]) -> dict[str, Any]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.seen.setdefault(event["customer_id"], []).append(event["event_id"])
        await asyncio.sleep(random.uniform(0, 0.005))
        self.active -= 1
        if event["customer_id"] == "C000013":
            raise PermanentError("no such customer", connector="customers", status=404)
        customer = {"customer_id": event["customer_id"], "name": "n", "tier": "gold", "country": "DE", "since": "x"}
        return {**event, "customer": customer, "enriched_at": 0, "pipeline": "test"}


async def test_same_key_in_offset_order_different_keys_concurrently_bounded() -> None:
    serde = AvroSerde(EmbeddedRegistry.load())
    orders = sample_orders(400, customers=20)
    records = [InboundRecord("orders", 0, n, 0, o["customer_id"].encode(), serde.encode(ORDER_PLACED, o))
               for n, o in enumerate(orders)]
    records.insert(100, InboundRecord("orders", 0, 10_000, 0, b"k", b"not avro"))
    pipeline = SlowEnricher()
    processor = BatchProcessor(pipeline, serde, pipeline_name="p", output_topic="out", max_in_flight=8)

    outbound = await processor.run(records)

    assert len(outbound) == len(records)
    assert [dict(o.headers)[Header.EVENT_ID] for o in outbound][:3] == [o["event_id"].encode() for o in orders[:3]]
    expected: dict[str, list[str]] = {}
    for order in orders:
        expected.setdefault(order["customer_id"], []).append(order["event_id"])
    assert pipeline.seen == expected
    assert 1 < pipeline.peak <= 8
    dead = [o for o in outbound if o.failed]
    assert {dict(o.headers)[Header.ERROR_KIND] for o in dead} == {b"poison", b"permanent"}
    assert len(dead) == 1 + sum(1 for o in orders if o["customer_id"] == "C000013")
