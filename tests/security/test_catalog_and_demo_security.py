"""The catalog source and the demo's catalog load reach the secure broker as the worker does (TLS, SASL).

The catalog source runs as its own process (``python -m streams.sources.catalog``) with only the
worker's settings in its environment (STREAMS_KAFKA_SECURITY_PROTOCOL, the CA file, the SCRAM user
and its password as a file), as a principal granted just its two topics and its transactional id.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from sandbox.server import SandboxConfig
from streams.demo import _load_catalog
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.sources.catalog import PRODUCT, read_checkpoint
from tests.conftest import SandboxThread
from tests.security.conftest import SecureKafka

pytestmark = pytest.mark.integration

PRODUCTS = 60
SERDE = AvroSerde(EmbeddedRegistry.load())
TOPIC_RIGHTS = [AclOperation.CREATE, AclOperation.DESCRIBE, AclOperation.WRITE, AclOperation.READ]
TRANSACTION_RIGHTS = [AclOperation.WRITE, AclOperation.DESCRIBE]


def grant_source(kafka: SecureKafka, user: str, topic_prefix: str, source_id: str) -> None:
    """What a catalog source needs: its topics (which it creates) and its transactional id."""
    kafka.grant(user, ResourceType.TOPIC, topic_prefix, TOPIC_RIGHTS, pattern=ResourcePatternType.PREFIXED)
    kafka.grant(user, ResourceType.TRANSACTIONAL_ID, f"streams-source.{source_id}", TRANSACTION_RIGHTS)


async def committed_product_ids(bootstrap: str, topic: str, security: Mapping[str, Any],
                                deadline: float = 60.0) -> Counter[str]:
    """Product ids of every committed record of ``topic`` (read_committed, to the last stable offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", **security)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        ids: Counter[str] = Counter()
        give_up = time.monotonic() + deadline
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < give_up, f"{topic} not read to its end in {deadline} s"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                ids.update(SERDE.decode(r.value, PRODUCT)["product_id"] for r in records)
        return ids
    finally:
        await consumer.stop()


EXPECTED = Counter(f"P{n:06d}" for n in range(1, PRODUCTS + 1))


async def test_the_catalog_source_writes_the_catalog_over_sasl_ssl_with_the_workers_settings(
    secure_kafka: SecureKafka, unique: str, tmp_path: Path
) -> None:
    topic, source_id = f"cat-{unique}", f"cat-{unique}"
    grant_source(secure_kafka, "shop", f"cat-{unique}", source_id)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("KAFKA_", "STREAMS_KAFKA_"))}  # only the secure broker's settings
    env |= secure_kafka.worker_env("shop")  # the bootstrap servers too: no --bootstrap-servers below
    with SandboxThread(config=SandboxConfig(catalog_size=PRODUCTS)) as api:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "streams.sources.catalog", "--base-url", api.url, "--topic", topic,
             "--checkpoint-topic", f"{topic}.checkpoints", "--source-id", source_id, "--page-size", "25",
             "--partitions", "3"],
            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)

    assert done.returncode == 0, done.stderr[-4000:]
    assert f"done, {PRODUCTS} products in 3 pages" in done.stderr, done.stderr[-2000:]
    assert secure_kafka.passwords["shop"] not in done.stdout + done.stderr
    security = secure_kafka.security("shop")
    assert await committed_product_ids(secure_kafka.bootstrap, topic, security) == EXPECTED
    final = await read_checkpoint(secure_kafka.bootstrap, f"{topic}.checkpoints", source_id, security=security)
    assert final.done and final.products == PRODUCTS and final.pages == 3


def test_the_catalog_source_refuses_unusable_security_settings_without_showing_a_secret(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    env = {**os.environ, **secure_kafka.worker_env("shop")}
    env.pop("STREAMS_KAFKA_SASL_USERNAME")  # SASL without a user: the settings refuse it
    done = subprocess.run([sys.executable, "-m", "streams.sources.catalog", "--base-url", "http://127.0.0.1:9"],
                          env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "invalid settings" in done.stderr
    assert secure_kafka.passwords["shop"] not in done.stdout + done.stderr


async def test_the_demo_loads_the_catalog_over_sasl_ssl(secure_kafka: SecureKafka, unique: str) -> None:
    topic = f"demo-{unique}"
    grant_source(secure_kafka, "shop", topic, "catalog")  # the demo's source id
    security = secure_kafka.security("shop")
    with SandboxThread(config=SandboxConfig(catalog_size=PRODUCTS)) as api:
        loaded = await _load_catalog(secure_kafka.bootstrap, api.url, topic, security)
    assert loaded == PRODUCTS
    assert await committed_product_ids(secure_kafka.bootstrap, topic, security) == EXPECTED
