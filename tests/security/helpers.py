"""What the security tests share: a pipeline on the secure broker with least-privilege ACLs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AclOperation, ResourceType

from pipelines.orders import ORDER_PLACED
from streams.engine.retry import RetryPolicy
from streams.kafka.clients import producer, read_records
from streams.names import dlq_topic, processed_topic, workers_topic
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.worker_process import WorkerProcess
from tests.security.conftest import SecureKafka

SERDE = AvroSerde(EmbeddedRegistry.load())
READ, WRITE, DESCRIBE, CREATE = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.CREATE


@dataclass
class SecurePipeline:
    """One test's pipeline on the secure broker: topics, least-privilege grants, a worker."""

    kafka: SecureKafka
    api_url: str
    name: str
    partitions: int
    workdir: Path

    @property
    def input_topic(self) -> str:
        return f"{self.name}.in"

    @property
    def output_topic(self) -> str:
        return f"{self.name}.out"

    @property
    def retry_topics(self) -> list[str]:
        return RetryPolicy(self.name, ["1s"]).topics

    @property
    def dlq(self) -> str:
        return dlq_topic(self.name)

    @property
    def processed(self) -> str:
        return processed_topic(self.name)

    @property
    def workers(self) -> str:
        return workers_topic(self.name)

    @property
    def leader_topic(self) -> str:
        return f"{self.name}-__assignor-__leader"  # Faust's leader assignor topic

    def create_topics(self) -> None:
        """As the admin, as an operator would: the worker creates nothing (no CREATE grant)."""
        self.kafka.create_topics({
            self.input_topic: self.partitions, self.output_topic: self.partitions, self.dlq: 1,
            self.processed: self.partitions, self.leader_topic: 1, self.workers: 1,
            **{topic: self.partitions for topic in self.retry_topics},
        })

    def worker_grants(self) -> list[tuple[ResourceType, str, list[AclOperation]]]:
        """Everything the worker's principal needs, and nothing else."""
        return [
            (ResourceType.TOPIC, self.input_topic, [READ, DESCRIBE]),
            *[(ResourceType.TOPIC, topic, [READ, WRITE, DESCRIBE]) for topic in self.retry_topics],
            (ResourceType.TOPIC, self.output_topic, [WRITE, DESCRIBE]),
            (ResourceType.TOPIC, self.dlq, [WRITE, DESCRIBE]),
            (ResourceType.TOPIC, self.processed, [READ, WRITE, DESCRIBE]),
            (ResourceType.TOPIC, self.workers, [WRITE, DESCRIBE]),
            # Faust declares this topic at start without looking whether it exists, and the broker
            # answers an unauthorized CreateTopics for an existing topic with an authorization error
            (ResourceType.TOPIC, self.leader_topic, [READ, DESCRIBE, CREATE]),
            (ResourceType.GROUP, self.name, [READ]),
        ]

    def grant_worker(self) -> None:
        for resource, name, operations in self.worker_grants():
            self.kafka.grant("worker", resource, name, operations)

    def grant_clients(self) -> None:
        """The shop writes the input; the auditor reads what the pipeline writes."""
        self.kafka.grant("shop", ResourceType.TOPIC, self.input_topic, [WRITE, DESCRIBE])
        for topic in (self.output_topic, self.dlq, *self.retry_topics):
            self.kafka.grant("auditor", ResourceType.TOPIC, topic, [READ, DESCRIBE])

    def worker(self, index: int = 0, **extra_env: str) -> WorkerProcess:
        env = {
            **self.kafka.worker_env("worker"),
            "STREAMS_APP": "pipelines.orders:pipeline",
            "STREAMS_PIPELINE": self.name,
            "STREAMS_INPUT_TOPIC": self.input_topic,
            "STREAMS_OUTPUT_TOPIC": self.output_topic,
            "STREAMS_RETRY_DELAYS": "1s",
            "STREAMS_API_CUSTOMERS_URL": self.api_url,
            "ORDERS_ENRICH_WITH": "customers",
            "STREAMS_DATA_DIR": str(self.workdir / f"worker-{index}"),
            "STREAMS_TELEMETRY_PORT": "0",
            "STREAMS_LOG_LEVEL": "info,aiokafka=warning",
            **extra_env,
        }
        return WorkerProcess(env, self.workdir / f"worker-{index}.log")

    async def produce(self, orders: list[dict[str, Any]], raw: list[tuple[bytes, list[tuple[str, bytes]]]] = (),
                      ) -> None:  # type: ignore[assignment]
        async with producer(self.kafka.bootstrap, security=self.kafka.security("shop"),
                            max_request_size=1_048_000) as client:
            futures = [await client.send(self.input_topic, SERDE.encode(ORDER_PLACED, o),
                                         key=o["customer_id"].encode()) for o in orders]
            futures += [await client.send(self.input_topic, value, key=b"hostile", headers=headers)
                        for value, headers in raw]
            await asyncio.gather(*futures)

    async def read(self, topics: list[str], until: int, deadline: float = 60.0,
                   idle_timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_records(self.kafka.bootstrap, topics, until=until, deadline=deadline,
                                  idle_timeout=idle_timeout, security=self.kafka.security("auditor"))

    async def end_offsets(self, topic: str) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap, **self.kafka.security("auditor"))
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    def committed(self) -> dict[int, int]:
        """The group's committed offsets on the input (admin view); -1001 when none."""
        request = ConsumerGroupTopicPartitions(
            self.name, [CkTopicPartition(self.input_topic, p) for p in range(self.partitions)])
        result = self.kafka.admin.list_consumer_group_offsets([request])[self.name].result(30)
        return {tp.partition: tp.offset for tp in result.topic_partitions}


def orders(count: int, prefix: str) -> list[dict[str, Any]]:
    """Well-formed OrderPlaced events, keys spread over a few customers."""
    now = int(time.time() * 1000)
    return [{
        "event_id": f"{prefix}-{i:05d}", "order_id": f"O{i:08d}", "customer_id": f"C{(i % 7) + 1:06d}",
        "placed_at": now, "currency": "EUR", "amount_cents": 1000 + i, "channel": "web",
        "shipping_country": "DE", "items": [{"sku": f"SKU-{i % 5}", "quantity": 1, "unit_price_cents": 1000 + i}],
        "coupon_code": None,
    } for i in range(count)]

