"""Plain aiokafka clients for the CLI, the demo and the tests (the worker uses Faust's).

Each helper takes ``security``: the aiokafka kwargs ``streams.security.kafka_security(settings)``
makes (TLS context, SASL); None talks PLAINTEXT.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def ensure_topics(bootstrap: str, partitions: dict[str, int], config: dict[str, str] | None = None,
                        *, security: Mapping[str, Any] | None = None) -> None:
    """Create the topics that do not exist yet, and wait until their metadata is visible."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, count, 1, topic_configs=config or {})
            for name, count in partitions.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently elsewhere
                await admin.create_topics(missing)
        deadline = time.monotonic() + 30
        while not set(partitions) <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(partitions)} not visible after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def partition_counts(bootstrap: str, topics: Iterable[str], *,
                           security: Mapping[str, Any] | None = None) -> dict[str, int]:
    """How many partitions each topic has, asked of the cluster now; 0 for a topic that does not exist."""
    wanted = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        # Describing a missing topic would have a broker with auto-creation create it: ask only for existing ones.
        existing = set(await admin.list_topics())
        present = [topic for topic in wanted if topic in existing]
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    found = {entry["topic"]: len(entry["partitions"]) for entry in described if entry.get("error_code", 0) == 0}
    return {topic: found.get(topic, 0) for topic in wanted}


async def partition_count(bootstrap: str, topic: str, *, security: Mapping[str, Any] | None = None) -> int:
    """How many partitions a topic has; 0 when it does not exist."""
    return (await partition_counts(bootstrap, [topic], security=security))[topic]


@asynccontextmanager
async def producer(bootstrap: str, *, security: Mapping[str, Any] | None = None,
                   **config: object) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                              **{**(security or {}), **config})
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def end_offsets(bootstrap: str, topic: str, *, security: Mapping[str, Any] | None = None) -> dict[int, int]:
    """The next offset of each partition of a topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **(security or {}))
    await consumer.start()
    try:
        count = await partition_count(bootstrap, topic, security=security)
        tps = [TopicPartition(topic, p) for p in range(count)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_records(
    bootstrap: str,
    topics: Iterable[str],
    *,
    start: dict[tuple[str, int], int] | None = None,
    until: int | None = None,
    idle_timeout: float = 5.0,
    deadline: float = 60.0,
    security: Mapping[str, Any] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read topics from the beginning (or ``start`` offsets) without a group.

    Stops when ``until`` records were read, when nothing new arrived for ``idle_timeout``
    seconds after the last record, or at ``deadline`` seconds, whichever comes first.
    """
    topics = list(topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                **(security or {}))
    await consumer.start()
    try:
        counts = await partition_counts(bootstrap, topics, security=security)
        tps = [TopicPartition(topic, p) for topic in topics for p in range(counts[topic])]
        consumer.assign(tps)
        for tp in tps:
            offset = (start or {}).get((tp.topic, tp.partition))
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        records: list[ConsumerRecord[bytes, bytes]] = []
        begin = last = time.monotonic()
        while True:
            now = time.monotonic()
            if until is not None and len(records) >= until:
                break
            if now - begin > deadline or now - last > idle_timeout:
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for partition_records in batch.values():
                records.extend(partition_records)
            if batch:
                last = time.monotonic()
        return records
    finally:
        await consumer.stop()
