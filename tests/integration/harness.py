"""What the integration tests share: a pipeline's topics and worker environment, produce, read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from pipelines.orders import ORDER_PLACED
from streams.kafka.clients import ensure_topics, producer, read_records
from streams.names import Header, dlq_topic
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.worker_process import WorkerProcess

SERDE = AvroSerde(EmbeddedRegistry.load())
PRODUCTS_TOPIC = "streams-tests.products"  # filled once per session by tests/integration/conftest.py


@dataclass
class PipelineUnderTest:
    """Unique topics and group for one test, and how to start workers on them."""

    bootstrap: str
    api_url: str
    name: str
    input_topic: str
    output_topic: str
    workdir: Path
    runtime: str | None = None  # STREAMS_RUNTIME of its workers; None: the default (aiokafka)

    @property
    def dlq(self) -> str:
        return dlq_topic(self.name)

    async def create_topics(self, partitions: int) -> None:
        await ensure_topics(self.bootstrap, {self.input_topic: partitions, self.output_topic: partitions, self.dlq: 1})

    def worker(self, index: int = 0, **extra_env: str) -> WorkerProcess:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAMS_APP": "pipelines.orders:pipeline",
            "STREAMS_PIPELINE": self.name,
            "STREAMS_INPUT_TOPIC": self.input_topic,
            "STREAMS_OUTPUT_TOPIC": self.output_topic,
            "STREAMS_API_CUSTOMERS_URL": self.api_url,
            "STREAMS_DATA_DIR": str(self.workdir / f"worker-{index}"),
            "STREAMS_TELEMETRY_PORT": "0",
            "STREAMS_TABLE_PRODUCTS_TOPIC": PRODUCTS_TOPIC,
            "STREAMS_LOG_LEVEL": "info,aiokafka=warning",
            **({"STREAMS_RUNTIME": self.runtime} if self.runtime else {}),
            **extra_env,
        }
        return WorkerProcess(env, self.workdir / f"worker-{index}.log")

    async def produce(self, orders: list[dict[str, Any]], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
        async with producer(self.bootstrap) as client:
            futures = [await client.send(self.input_topic, SERDE.encode(ORDER_PLACED, o),
                                         key=o["customer_id"].encode()) for o in orders]
            futures += [await client.send(self.input_topic, value, key=b"poison") for value in raw]
            await asyncio.gather(*futures)

    async def read(self, topics: list[str], until: int, deadline: float = 120.0,
                   idle_timeout: float = 60.0) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_records(self.bootstrap, topics, until=until, deadline=deadline, idle_timeout=idle_timeout)


def pipeline_under_test(bootstrap: str, api_url: str, unique: str, workdir: Path) -> PipelineUnderTest:
    return PipelineUnderTest(bootstrap, api_url, f"enricher-{unique}", f"orders-{unique}",
                             f"orders-{unique}.enriched", workdir)


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {name: value.decode("utf-8", "replace") for name, value in record.headers}


async def wait_for(condition: Callable[[], Any], deadline: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy, or fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline} s waiting for {what}")
        await asyncio.sleep(interval)


async def group_assignment(bootstrap: str, group: str) -> dict[str, set[tuple[str, int]]]:
    """Each member of a consumer group and the partitions the group's leader assigned to it."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    except KafkaError as exc:
        if exc.retriable:  # e.g. the group coordinator is still loading on a fresh broker
            return {}
        raise
    finally:
        await admin.close()
    members: dict[str, set[tuple[str, int]]] = {}
    for response in responses:
        for described in response.to_object()["groups"]:
            if described["state"] != "Stable":
                return {}
            for member in described["members"]:
                raw = member["member_assignment"]
                assignment = ConsumerProtocolMemberAssignment.decode(raw) if raw else None
                members[member["member_id"]] = {
                    (tp.topic, tp.partition) for tp in (assignment.partitions() if assignment else [])
                }
    return members


class TopicCollector:
    """Consumes topics from the beginning in the background, for tests to watch progress.

        async with TopicCollector(bootstrap, [output, dlq]) as seen:
            await seen.wait_until(lambda records: len(records) >= 100, deadline=60)
    """

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicCollector:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def run() -> None:
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                    for records in batch.values():
                        self.records.extend(records)
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        return [r for r in self.records if r.topic == topic]

    def event_ids(self, *topics: str) -> list[str]:
        wanted = set(topics or self.topics)
        return [headers_of(r)["event-id"] for r in self.records if r.topic in wanted]

    async def wait_until(self, condition: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
                         deadline: float, what: str) -> None:
        await wait_for(lambda: condition(self.records), deadline, what)


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic``."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


async def set_faults(api_url: str, endpoint: str, spec: dict[str, Any] | None) -> None:
    """Set (or with None clear) the sandbox's fault injection for one endpoint, as an operator would."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        if spec is None:
            async with session.delete(f"{api_url}/admin/faults/{endpoint}") as response:
                assert response.status < 300, await response.text()
        else:
            async with session.put(f"{api_url}/admin/faults/{endpoint}", json=spec) as response:
                assert response.status < 300, await response.text()


def telemetry_url(worker: WorkerProcess) -> str:
    """Where a worker serves /metrics, /healthz and /readyz (it logs the port it bound)."""
    import re

    found = re.findall(r"telemetry server on (http://127\.0\.0\.1:\d+)", worker.log_path.read_text(errors="replace"))
    assert found, "the worker has not started its telemetry server"
    return found[-1]


async def fill_dlq(bootstrap: str, pipeline: str, input_topic: str, letters: int, partitions: int = 4) -> None:
    """``letters`` poison dead letters spread over the DLQ's ``partitions``, with the headers the
    worker writes (origin ``input_topic``), and the input topic to replay them to."""
    await ensure_topics(bootstrap, {dlq_topic(pipeline): partitions, input_topic: partitions})
    failed_at = str(int(time.time() * 1000))
    async with producer(bootstrap) as client:
        futures = []
        for n in range(letters):
            headers = [
                (Header.EVENT_ID, f"evt-{n}".encode()),
                (Header.ORIGIN_TOPIC, input_topic.encode()),
                (Header.ORIGIN_PARTITION, str(n % partitions).encode()),
                (Header.ORIGIN_OFFSET, str(n // partitions).encode()),
                (Header.ERROR_KIND, b"poison"),
                (Header.ERROR_CLASS, b"WireFormatError"),
                (Header.ERROR_MESSAGE, b"not in the Confluent wire format (magic byte 0x7b)"),
                (Header.FIRST_FAILURE_AT, failed_at.encode()),
            ]
            futures.append(await client.send(dlq_topic(pipeline), b'{"not": "avro"} ' + str(n).encode(),
                                             key=f"key-{n}".encode(), headers=headers, partition=n % partitions))
        await asyncio.gather(*futures)
