"""A topic read whole into a local table, by a field of its records: reference data for steps.

    products = pipeline.table("products", topic="products", schema="dev.streams.catalog.Product", key="sku")

    @pipeline.step()
    def names(event):
        return [products.get(item["sku"]) for item in event["items"]]

Each worker reads the whole topic (no consumer group: every worker needs every record) when
the pipeline starts, then keeps following it, so a changed record shows up within a poll.
Records are read committed (a source may write them in transactions); the newest record of a
key wins. ``STREAMS_TABLE_<NAME>_TOPIC`` overrides the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.serde.avro import AvroSerde

log = logging.getLogger("streams.table")


class Table:
    """Records of a topic by ``key`` (a field name); ``value`` maps a record to what is kept
    (default: the whole record). At most ``max_entries`` keys are held."""

    def __init__(self, name: str, *, topic: str, schema: str, key: str,
                 value: Callable[[dict[str, Any]], Any] | None = None, max_entries: int = 1_000_000) -> None:
        self.name = name
        self.topic = topic
        self.schema = schema
        self.key = key
        self._value = value
        self._max = max_entries
        self._bootstrap: str | None = None
        self._serde: AvroSerde | None = None
        self._config: Mapping[str, Any] = {}
        self._rows: dict[Any, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self.undecodable = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"Table({self.name!r}, topic={self.topic!r}, {len(self._rows)} rows)"

    def get(self, key: Any, default: Any = None) -> Any:
        """The newest record (or its ``value``) of ``key``, else ``default``."""
        return self._rows.get(key, default)

    def bind(self, bootstrap: str, serde: AvroSerde, client_config: Mapping[str, Any] | None = None) -> None:
        """Where to read from (the worker's broker and serde); the environment may rename the topic."""
        self._bootstrap, self._serde, self._config = bootstrap, serde, client_config or {}
        variable = f"STREAMS_TABLE_{re.sub(r'[^A-Z0-9]', '_', self.name.upper())}_TOPIC"
        self.topic = os.environ.get(variable) or self.topic

    async def start(self, load_timeout: float = 15.0) -> None:
        """Load the topic up to its current end (at most ``load_timeout`` s), then follow it."""
        if self._bootstrap is None:
            raise RuntimeError(f"table {self.name!r} is not bound to a broker (the worker binds it)")
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed", **self._config)
        await consumer.start()
        await consumer._client.force_metadata_update()  # fresh metadata for the topic
        partitions = consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            log.warning("table %s: topic %s does not exist: every lookup misses", self.name, self.topic)
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
        log.info("table %s: %d rows from %s", self.name, len(self._rows), self.topic)
        self._task = asyncio.create_task(self._follow(consumer), name=f"table-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        failing = False
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                except KafkaError as exc:  # the brokers are away: keep the rows, try again
                    if not failing:
                        log.warning("table %s: cannot read %s (%s: %s); its rows stay as they are until it can",
                                    self.name, self.topic, type(exc).__name__, exc)
                    failing = True
                    await asyncio.sleep(1.0)
                    continue
                if failing:
                    log.info("table %s: reading %s again", self.name, self.topic)
                    failing = False
                self._apply(batch)
        finally:
            await consumer.stop()

    def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._serde is not None
        for records in batch.values():
            for record in records:
                try:
                    row = self._serde.decode(record.value, self.schema)
                    key = row[self.key]
                except (ValueError, LookupError):
                    self.undecodable += 1
                    continue
                if len(self._rows) < self._max or key in self._rows:
                    self._rows[key] = row if self._value is None else self._value(row)
