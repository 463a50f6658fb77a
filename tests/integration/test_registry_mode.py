"""The orders-enricher in Schema Registry mode, end to end: real broker, real Apicurio, real sandbox API.

Producers on OrderPlaced v1 (our serde) and v2 (confluent-kafka's AvroSerializer, an independent
client) feed one worker whose schemas come from the registry (``STREAMS_SCHEMA_REGISTRY_URL``).
The output is read back with confluent-kafka's AvroDeserializer. Bad records among them (an
unknown schema id, a wrong magic byte, a truncated body, a writer schema the reader cannot
resolve) go to the DLQ with a precise reason while the worker carries on.

Needs the app wiring: a ``schema_registry_url`` setting, and the worker building its serde with
``streams.serde.factory.registry_from_url(settings.schema_registry_url)``. Skipped until then.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from pipelines.orders_samples import sample_orders
from sandbox.customers import customer_for
from streams.kafka.clients import producer
from streams.names import Header
from streams.serde import AvroSerde, EmbeddedRegistry, frame
from streams.serde.confluent import ConfluentRegistry
from streams.serde.factory import push_schemas
from streams.settings import Settings
from tests.conftest import SandboxThread
from tests.contract.apicurio import registry_for_tests
from tests.integration.harness import headers_of, pipeline_under_test

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("schema_registry_url" not in Settings.model_fields,
                       reason="registry mode is not wired into the worker yet (Settings.schema_registry_url)"),
]

EMBEDDED = EmbeddedRegistry.load()


@pytest.fixture(scope="module")
def schema_registry_url() -> Iterator[str]:
    """The session's registry (tests/contract/apicurio.py), holding the schemas of schemas/."""
    with registry_for_tests() as url:
        registry = ConfluentRegistry(url)
        push_schemas(registry)
        registry.close()
        yield url


async def test_v1_and_v2_producers_feed_a_registry_mode_worker_and_bad_records_go_to_the_dlq(
    kafka_bootstrap: str, sandbox: SandboxThread, schema_registry_url: str, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=2)
    registry = ConfluentRegistry(schema_registry_url)
    ours = AvroSerde(registry)
    v1_orders = sample_orders(40, seed=41)
    v2_orders = sample_orders(40, seed=42, version=2)

    # v1 producer: our serde, the registry's id of OrderPlaced v1
    v1_values = [ours.encode_with(registry.version(ORDER_PLACED, 1), o) for o in v1_orders]
    # v2 producer: confluent-kafka's serializer, which finds our v2 in the registry by content
    client = SchemaRegistryClient({"url": schema_registry_url})
    serializer = AvroSerializer(client, json.dumps(EMBEDDED.versions(ORDER_PLACED)[1].definition),
                                conf={"auto.register.schemas": False,
                                      "subject.name.strategy": record_subject_name_strategy})
    v2_values = [serializer(o, SerializationContext(pipeline.input_topic, MessageField.VALUE)) for o in v2_orders]
    # bad records
    rogue = {**EMBEDDED.versions(ORDER_PLACED)[0].definition}
    rogue["fields"] = [{**f, "type": "string"} if f["name"] == "amount_cents" else f for f in rogue["fields"]]
    rogue_id = registry.register(f"test.rogue-{unique}", rogue)  # another subject, same record name
    rogue_value = frame(rogue_id, ours.encode_with(registry.by_id(rogue_id), {**v1_orders[0],
                                                                               "amount_cents": "12.50"})[5:])
    unknown_id = struct.pack(">bI", 0, 987_654) + b"\x02x"
    wrong_magic = b"\x07" + v2_values[0][1:]
    truncated = v2_values[0][:-7]
    bad = {unknown_id: ("UnknownSchemaError", "schema id 987654 is not registered"),
           wrong_magic: ("WireFormatError", "magic byte is 0x07"),
           truncated: ("AvroDecodeError", "is truncated"),
           rogue_value: ("AvroDecodeError", "cannot be resolved to the reader schema dev.streams.orders.OrderPlaced")}

    async with producer(kafka_bootstrap) as kafka:
        sends = [await kafka.send(pipeline.input_topic, v, key=o["customer_id"].encode())
                 for o, v in zip(v1_orders[:20] + v2_orders[:20], v1_values[:20] + v2_values[:20], strict=True)]
        sends += [await kafka.send(pipeline.input_topic, value, key=b"poison") for value in bad]
        sends += [await kafka.send(pipeline.input_topic, v, key=o["customer_id"].encode())
                  for o, v in zip(v1_orders[20:] + v2_orders[20:], v1_values[20:] + v2_values[20:], strict=True)]
        await asyncio.gather(*sends)

    with pipeline.worker(STREAMS_SCHEMA_REGISTRY_URL=schema_registry_url) as worker:
        records = await pipeline.read([pipeline.output_topic, pipeline.dlq], until=80 + len(bad))
        assert worker.alive, worker.log_tail()

    outputs = [r for r in records if r.topic == pipeline.output_topic]
    counts = Counter(headers_of(r)[Header.EVENT_ID] for r in outputs)
    orders = {o["event_id"]: o for o in v1_orders + v2_orders}
    assert set(counts) == set(orders) and max(counts.values()) == 1
    enriched_id = registry.latest(ENRICHED_ORDER).schema_id  # the newest version in schemas/
    deserializer = AvroDeserializer(client)
    for record in outputs:
        assert int.from_bytes((record.value or b"")[1:5], "big") == enriched_id  # the registry's id
        theirs = deserializer(record.value, SerializationContext(pipeline.output_topic, MessageField.VALUE))
        order = orders[theirs["event_id"]]
        assert theirs["coupon_code"] == order.get("coupon_code")  # None for v1 producers
        assert theirs["customer"] == customer_for(order["customer_id"])
        assert theirs["items"] == order["items"]
        assert ours.decode(record.value, ENRICHED_ORDER)["order_id"] == order["order_id"]

    dead = {r.value: headers_of(r) for r in records if r.topic == pipeline.dlq}
    assert set(dead) == set(bad)
    for value, (error_class, reason) in bad.items():
        assert dead[value][Header.ERROR_KIND] == "poison"
        assert dead[value][Header.ERROR_CLASS] == error_class
        assert reason in dead[value][Header.ERROR_MESSAGE], dead[value][Header.ERROR_MESSAGE]
    registry.close()
