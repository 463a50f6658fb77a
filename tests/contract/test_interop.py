"""Interop with an independent client, through a real broker and a real Schema Registry.

Records our serde writes are read by confluent-kafka's ``AvroDeserializer``, and records its
``AvroSerializer`` writes are read by our serde, both against the same registry (Apicurio's
ccompat API) and with the Confluent wire format in between.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.kafka.clients import ensure_topics, producer, read_records
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.serde.confluent import ConfluentRegistry

pytestmark = pytest.mark.integration

EMBEDDED = EmbeddedRegistry.load()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(value: Any) -> Any:
    return (value - EPOCH) // timedelta(milliseconds=1) if isinstance(value, datetime) else value


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded record with timestamps back in epoch milliseconds, as it was produced."""
    return {k: _millis(v) for k, v in record.items()}


def _confluent_read(bootstrap: str, topic: str, count: int, deadline: float = 60.0) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first ``count`` records of partition 0, read by librdkafka."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"interop-{topic}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[tuple[bytes, bytes]] = []
    end = time.monotonic() + deadline
    try:
        while len(records) < count and time.monotonic() < end:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            records.append((message.key(), message.value()))
    finally:
        consumer.close()
    assert len(records) == count, f"read {len(records)} of {count} records in {deadline} s"
    return records


async def test_records_we_write_are_read_by_confluents_avro_deserializer(
    kafka_bootstrap: str, registry: ConfluentRegistry, schema_registry_url: str, unique: str
) -> None:
    topic = f"interop-ours-{unique}"
    await ensure_topics(kafka_bootstrap, {topic: 1})
    serde = AvroSerde(registry)
    v1_orders = sample_orders(3, seed=11)
    v2_orders = sample_orders(3, seed=12, version=2)
    enriched = {**v2_orders[0], "customer": {"customer_id": v2_orders[0]["customer_id"], "name": "Ada Lovelace",
                                            "tier": "gold", "country": "GB", "since": "2019-03-04"},
                "enriched_at": 1_760_000_000_000, "pipeline": "orders-enricher"}
    values = [serde.encode_with(registry.version(ORDER_PLACED, 1), o) for o in v1_orders]
    values += [serde.encode(ORDER_PLACED, o) for o in v2_orders]
    values.append(serde.encode(ENRICHED_ORDER, enriched))
    async with producer(kafka_bootstrap) as client:
        await asyncio.gather(*[await client.send(topic, v, key=b"k") for v in values])

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": schema_registry_url}))
    context = SerializationContext(topic, MessageField.VALUE)
    read = [deserializer(value, context) for _, value in _confluent_read(kafka_bootstrap, topic, len(values))]

    assert [_plain(r) for r in read[:3]] == v1_orders  # written with v1: no coupon_code at all
    assert [_plain(r) for r in read[3:6]] == v2_orders
    decoded = _plain(read[6])
    assert {key: decoded[key] for key in enriched} == enriched
    assert {key: decoded[key] for key in set(decoded) - set(enriched)} == {  # newer fields, at their defaults
        "risk": None, "amount_eur_cents": None, "products": [], "degraded": False, "degraded_reasons": []}


async def test_records_written_by_confluents_avro_serializer_are_read_by_our_serde(
    kafka_bootstrap: str, registry: ConfluentRegistry, schema_registry_url: str, unique: str
) -> None:
    topic = f"interop-theirs-{unique}"
    await ensure_topics(kafka_bootstrap, {topic: 1})
    client = SchemaRegistryClient({"url": schema_registry_url})
    # Subjects named after the record, as ours; no auto-registration: the serializer must
    # find the schemas we pushed, by content, and use their ids.
    conf = {"auto.register.schemas": False, "subject.name.strategy": record_subject_name_strategy}
    serializers = {
        version: AvroSerializer(client, _schema_text(version), conf=conf) for version in (1, 2)
    }
    v1_orders = sample_orders(3, seed=21)
    v2_orders = sample_orders(3, seed=22, version=2)
    context = SerializationContext(topic, MessageField.VALUE)
    kafka = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for version, orders in ((1, v1_orders), (2, v2_orders)):
        for order in orders:
            kafka.produce(topic, key=order["customer_id"].encode(), value=serializers[version](order, context))
    assert kafka.flush(30) == 0

    records = await read_records(kafka_bootstrap, [topic], until=6, idle_timeout=30)
    serde = AvroSerde(registry)
    decoded = [_plain(serde.decode(r.value, ORDER_PLACED)) for r in records]

    ids = [int.from_bytes((r.value or b"")[1:5], "big") for r in records]
    assert ids[:3] == [registry.version(ORDER_PLACED, 1).schema_id] * 3
    assert ids[3:] == [registry.version(ORDER_PLACED, 2).schema_id] * 3
    assert decoded[:3] == [{**o, "coupon_code": None} for o in v1_orders]  # v1 data, our v2 reader
    assert decoded[3:] == v2_orders


def _schema_text(version: int) -> str:
    return json.dumps(EMBEDDED.versions(ORDER_PLACED)[version - 1].definition)
