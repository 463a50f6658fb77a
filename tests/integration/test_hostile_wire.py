"""Whatever a producer can put on the wire reaches the engine, and the worker keeps running.

The hostile records are written by kcat (librdkafka), the one common client that writes a
header name's bytes as given, and everything is read back with confluent-kafka: records built
in-process would skip aiokafka's record parser, where a header name that is not UTF-8 used to
stop every worker of the group.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import SERDE, pipeline_under_test, telemetry_url, wait_for

pytestmark = pytest.mark.integration

KCAT = shutil.which("kcat")


def kcat_produce(bootstrap: str, topic: str, values: list[Path], *, headers: list[bytes] = (),  # type: ignore[assignment]
                 key: bytes | None = None, null_value: bool = False, compression: str = "none") -> None:
    """Each file is one record; header arguments are raw bytes (``name=value``), as kcat sends them.

    ``null_value``: one record with ``key`` and a null value (kcat sends an empty value as null with -Z).
    """
    assert KCAT, "kcat is needed for the hostile-input tests (Debian package kcat; make test installs it)"
    command: list[str | bytes] = [KCAT, "-P", "-b", bootstrap, "-t", topic, "-p", "0", "-z", compression,
                                  "-X", "message.max.bytes=1000000"]
    for header in headers:
        command += [b"-H", header]
    if null_value:
        assert key is not None and not values
        subprocess.run([*command, "-K", ":", "-Z"], input=key + b":\n", check=True, timeout=60, capture_output=True)
        return
    if key is not None:
        command += [b"-k", key]
    subprocess.run([*command, *map(str, values)], check=True, timeout=60, capture_output=True)


def confluent_read(bootstrap: str, topics: list[str], until: int, deadline: float = 120.0) -> list[object]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, 0) for t in topics for p in metadata.topics[t].partitions])
        records: list[object] = []
        end = time.monotonic() + deadline
        while len(records) < until and time.monotonic() < end:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                records.append(message)
        return records
    finally:
        consumer.close()


def confluent_produce(bootstrap: str, topic: str, orders: list[dict[str, object]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for order in orders:
        producer.produce(topic, SERDE.encode(ORDER_PLACED, order), key=str(order["customer_id"]).encode())
    assert producer.flush(30) == 0


async def test_every_record_a_producer_can_write_is_enriched_or_dead_lettered_and_the_worker_keeps_running(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=2)
    valid = sample_orders(200, seed=11)
    odd = sample_orders(3, seed=12)  # valid values under odd but legal headers and keys: enriched

    def value_file(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    good = SERDE.encode(ORDER_PLACED, valid[0])
    poison = {
        "bad header name": value_file("bad-name", SERDE.encode(ORDER_PLACED, sample_orders(1, seed=13)[0])),
        "random bytes": value_file("random", os.urandom(300)),
        "truncated Avro": value_file("truncated", good[: len(good) // 2]),
        "near the size limit": value_file("huge", b"\x00\x00\x00\x00\x01" + os.urandom(895_000)),
    }
    chunks = [valid[i:i + 25] for i in range(0, 200, 25)]
    confluent_produce(kafka_bootstrap, pipeline.input_topic, chunks[0])
    kcat_produce(kafka_bootstrap, pipeline.input_topic, [poison["bad header name"]],
                 headers=[b"x-bad-\xff\xfe=v", b"ok=1"], key=b"C-hostile")
    confluent_produce(kafka_bootstrap, pipeline.input_topic, chunks[1])
    kcat_produce(kafka_bootstrap, pipeline.input_topic, [value_file("odd-0", SERDE.encode(ORDER_PLACED, odd[0]))],
                 headers=[b"x-value=\xff\xfe\x01binary"], key=b"C-odd")
    confluent_produce(kafka_bootstrap, pipeline.input_topic, chunks[2])
    kcat_produce(kafka_bootstrap, pipeline.input_topic, [value_file("odd-1", SERDE.encode(ORDER_PLACED, odd[1]))],
                 headers=[f"x-h{n}=v{n}".encode() for n in range(50)], key=b"C-odd")
    confluent_produce(kafka_bootstrap, pipeline.input_topic, chunks[3])
    kcat_produce(kafka_bootstrap, pipeline.input_topic, [value_file("odd-2", SERDE.encode(ORDER_PLACED, odd[2]))])
    kcat_produce(kafka_bootstrap, pipeline.input_topic, [], key=b"C-null", null_value=True)
    confluent_produce(kafka_bootstrap, pipeline.input_topic, chunks[4])
    kcat_produce(kafka_bootstrap, pipeline.input_topic, [poison["random bytes"], poison["truncated Avro"]],
                 key=b"C-hostile", compression="zstd")
    confluent_produce(kafka_bootstrap, pipeline.input_topic, chunks[5])
    kcat_produce(kafka_bootstrap, pipeline.input_topic, [poison["near the size limit"]], key=b"C-hostile")
    confluent_produce(kafka_bootstrap, pipeline.input_topic, chunks[6] + chunks[7])

    with pipeline.worker() as worker:
        expected = 200 + len(odd) + len(poison) + 1  # + the null value
        records = await asyncio.to_thread(confluent_read, kafka_bootstrap, [pipeline.output_topic, pipeline.dlq],
                                          expected)
        assert worker.alive, worker.log_tail()
        url = telemetry_url(worker)

        async def ready() -> bool:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
                return response.status == 200

        await wait_for(ready, deadline=30, what="/readyz to answer 200")

    def headers(message: object) -> dict[str, bytes]:
        return dict(message.headers() or [])  # type: ignore[attr-defined]

    enriched = [m for m in records if m.topic() == pipeline.output_topic]  # type: ignore[attr-defined]
    dead = [m for m in records if m.topic() == pipeline.dlq]  # type: ignore[attr-defined]
    assert sorted(headers(m)[Header.EVENT_ID].decode() for m in enriched) == sorted(
        o["event_id"] for o in valid + odd)
    by_value = {m.value(): headers(m) for m in dead}  # type: ignore[attr-defined]
    for what, path in poison.items():
        assert path.read_bytes() in by_value, f"{what}: not in the DLQ with its original bytes"
    assert None in by_value, "the null value is not in the DLQ"
    assert len(dead) == len(poison) + 1
    for dead_headers in by_value.values():
        assert dead_headers[Header.ERROR_KIND] == b"poison"
        origin = b":".join(dead_headers[h] for h in (Header.ORIGIN_TOPIC, Header.ORIGIN_PARTITION,
                                                     Header.ORIGIN_OFFSET))
        assert dead_headers[Header.EVENT_ID] == origin
    bad_name = by_value[poison["bad header name"].read_bytes()]
    assert bad_name[Header.ERROR_CLASS] == b"MalformedHeader"
    assert b"x-bad-\\xff\\xfe" in bad_name[Header.ERROR_MESSAGE]
    assert by_value[poison["near the size limit"].read_bytes()][Header.ERROR_CLASS] == b"RecordTooLarge"


async def test_a_plain_aiokafka_consumer_reads_past_a_header_name_that_is_not_utf8(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The seam ``streams.kafka.wire_records`` uses: fails if a new aiokafka moves it."""
    import streams.kafka  # noqa: F401 - installs the tolerant record reading

    topic = f"wire-{unique}"
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    kcat_produce(kafka_bootstrap, topic, [first, second], headers=[b"x-\xff=1", b"ok=2"], compression="gzip")
    kcat_produce(kafka_bootstrap, topic, [first])
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        seen: list[tuple[int, bytes | None, tuple[tuple[str, bytes], ...]]] = []
        end = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < end:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                seen += [(r.offset, r.value, tuple(r.headers)) for r in batch]
    finally:
        await consumer.stop()
    assert seen == [
        (0, b"first", (("x-\udcff", b"1"), ("ok", b"2"))),
        (1, b"second", (("x-\udcff", b"1"), ("ok", b"2"))),
        (2, b"first", ()),
    ]
    assert seen[0][2][0][0].encode("utf-8", "surrogateescape") == b"x-\xff"
