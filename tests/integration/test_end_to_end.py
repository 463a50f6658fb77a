"""The orders-enricher pipeline end to end against a real broker and the sandbox API."""

from __future__ import annotations

import struct
from collections import Counter
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from sandbox.customers import customer_for
from sandbox.fx import rates_for
from sandbox.risk import risk_score
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import SERDE, headers_of, pipeline_under_test

pytestmark = pytest.mark.integration


async def test_every_event_is_enriched_exactly_once(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=4)
    orders = sample_orders(1000, customers=300)
    await pipeline.produce(orders)

    with pipeline.worker() as worker:
        records = await pipeline.read([pipeline.output_topic], until=len(orders))
        assert worker.alive, worker.log_tail()

    by_id = {o["event_id"]: o for o in orders}
    counts = Counter(headers_of(r)[Header.EVENT_ID] for r in records)
    assert set(counts) == set(by_id), f"missing {len(set(by_id) - set(counts))} event ids"
    assert max(counts.values()) == 1, f"duplicates: {[k for k, v in counts.items() if v > 1][:5]}"
    for record in records:
        enriched = SERDE.decode(record.value)
        order = by_id[enriched["event_id"]]
        assert enriched["customer"] == customer_for(order["customer_id"])
        assert enriched["amount_cents"] == order["amount_cents"]
        assert enriched["items"] == order["items"]
        assert enriched["pipeline"] == pipeline.name
        assert record.key == order["customer_id"].encode()
        expected_risk, _ = risk_score(order)
        assert enriched["risk"] == {"score": expected_risk["score"], "band": expected_risk["band"], "source": "live"}
        rate = Decimal(1) if order["currency"] == "EUR" else Decimal(rates_for(order["currency"])["rates"]["EUR"])
        assert enriched["amount_eur_cents"] == int((order["amount_cents"] * rate).quantize(Decimal(1), ROUND_HALF_EVEN))
        assert [p["sku"] for p in enriched["products"]] == [i["sku"] for i in order["items"]]
        assert all(p["name"] != "unknown" and p["product_id"] for p in enriched["products"])
        assert enriched["degraded"] is False and enriched["degraded_reasons"] == []


async def test_undecodable_records_go_to_the_dlq_with_their_bytes_and_the_rest_flows(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=2)
    not_avro = b"\xff\xfe{definitely not avro"
    unknown_id = struct.pack(">bI", 0, 424_242) + b"\x02x"
    before, after = sample_orders(50, seed=1), sample_orders(50, seed=2)
    await pipeline.produce(before)
    await pipeline.produce([], raw=[not_avro, unknown_id])
    await pipeline.produce(after)

    with pipeline.worker() as worker:
        records = await pipeline.read([pipeline.output_topic, pipeline.dlq], until=102)
        assert worker.alive, worker.log_tail()

    enriched = {headers_of(r)[Header.EVENT_ID] for r in records if r.topic == pipeline.output_topic}
    assert enriched == {o["event_id"] for o in before + after}
    dead = {r.value: headers_of(r) for r in records if r.topic == pipeline.dlq}
    assert set(dead) == {not_avro, unknown_id}
    for headers in dead.values():
        assert headers[Header.ERROR_KIND] == "poison"
        assert headers[Header.ORIGIN_TOPIC] == pipeline.input_topic
        assert headers[Header.EVENT_ID] == (
            f"{pipeline.input_topic}:{headers[Header.ORIGIN_PARTITION]}:{headers[Header.ORIGIN_OFFSET]}"
        )
        assert headers[Header.ATTEMPT] == "1"
        assert int(headers[Header.FIRST_FAILURE_AT]) > 0
    assert dead[not_avro][Header.ERROR_CLASS] == "WireFormatError"
    assert "magic byte is 0xff" in dead[not_avro][Header.ERROR_MESSAGE]
    assert dead[unknown_id][Header.ERROR_CLASS] == "UnknownSchemaError"
    assert "schema id 424242 is not registered" in dead[unknown_id][Header.ERROR_MESSAGE]
