"""The product catalog as a local table: every product on the products topic, by SKU.

The catalog source (``connectors.sources.catalog``) pages through the catalog API into the
products topic; each worker reads that whole topic (no consumer group: every worker needs
every product) and keeps reading it, so a changed product shows up within a poll. Records
are read committed, the source writes them in transactions.

    catalog = ProductCatalog(bootstrap, "products", serde)
    await catalog.start()          # loads what is there, then follows the topic
    catalog.lookup("SKU-007919")   # {"product_id": ..., "name": ..., "category": ...} or None
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.serde.avro import AvroSerde

log = logging.getLogger("streams.catalog")

PRODUCT = "dev.streams.catalog.Product"


class ProductCatalog:
    def __init__(self, bootstrap: str, topic: str, serde: AvroSerde, *, max_products: int = 1_000_000,
                 client_config: dict[str, Any] | None = None) -> None:
        self.topic = topic
        self._bootstrap = bootstrap
        self._serde = serde
        self._max = max_products
        self._config = client_config or {}
        self._by_sku: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self.undecodable = 0

    def __len__(self) -> int:
        return len(self._by_sku)

    def lookup(self, sku: str) -> dict[str, Any] | None:
        return self._by_sku.get(sku)

    async def start(self, load_timeout: float = 15.0) -> None:
        """Load the topic up to its current end (at most ``load_timeout`` s), then follow it."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed", **self._config)
        await consumer.start()
        await consumer._client.force_metadata_update()  # fresh metadata for the topic
        partitions = consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            log.warning("products topic %s does not exist: every product lookup misses", self.topic)
            await consumer.stop()
            return
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + load_timeout
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            self._apply(await consumer.getmany(timeout_ms=500, max_records=10_000))
        log.info("product catalog: %d products from %s", len(self._by_sku), self.topic)
        self._task = asyncio.create_task(self._follow(consumer), name="product-catalog")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                self._apply(await consumer.getmany(timeout_ms=1000, max_records=10_000))
        finally:
            await consumer.stop()

    def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                try:
                    product = self._serde.decode(record.value, PRODUCT)
                except (ValueError, LookupError):
                    self.undecodable += 1
                    continue
                if len(self._by_sku) < self._max or product["sku"] in self._by_sku:
                    self._by_sku[product["sku"]] = {
                        "product_id": product["product_id"], "name": product["name"], "category": product["category"],
                    }
