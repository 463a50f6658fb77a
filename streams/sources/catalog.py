"""The catalog source: pages through the product catalog API into a Kafka topic, resumably.

    python -m streams.sources.catalog --base-url http://127.0.0.1:8080 \\
        --topic products --checkpoint-topic products.checkpoints

Each page's products and the cursor of the page after it are written in ONE Kafka transaction:
the products to ``topic`` (Avro ``dev.streams.catalog.Product`` in the Confluent framing, keyed
by product id, because it is a contract other pipelines read), the cursor to the compacted
``checkpoint_topic`` keyed by the source id (JSON, because it is this process's private state
and a person should be able to read it with any console consumer). A crash anywhere leaves
either both or neither. A restart with the same source id uses the same transactional id,
which fences a zombie and aborts its open transaction, then reads the last committed cursor and
goes on from there; readers with ``isolation_level=read_committed`` see each product once.

Kafka security is the worker's: ``STREAMS_KAFKA_SECURITY_PROTOCOL``, the ``STREAMS_KAFKA_SSL_*``
files and ``STREAMS_KAFKA_SASL_*`` (``streams.settings.Settings``, made into client settings by
``streams.security.kafka_security``); every client the source makes (admin, transactional
producer, checkpoint reader) uses them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from connectors.catalog import CatalogConnector, CatalogPage
from connectors.errors import PermanentError, TransientError
from connectors.http import HttpSettings
from streams.kafka.clients import partition_count, producer
from streams.progress import progress
from streams.serde import AvroSerde, EmbeddedRegistry

if TYPE_CHECKING:
    from streams.progress import Progress

PRODUCT = "dev.streams.catalog.Product"

log = logging.getLogger("streams.sources.catalog")


@dataclass(frozen=True, slots=True)
class CatalogSourceSettings:
    """Where the source reads and writes.

    source_id: names this source's checkpoint (the record key) and its transactional id; two
        sources with one id fence each other, so run one process per id.
    page_size: products asked for per page (one transaction each).
    topic_partitions: partitions of ``topic`` when the source creates it.
    retry_delay / max_page_failures: after a page fails transiently (its in-call retries spent),
        wait this long (or the server's Retry-After) and try again, at most this many times in a row.
    hold_before_commit_page: for crash tests only: after producing this page (1-based) the
        source flushes and then waits forever before committing, so a test can kill it mid-transaction.
    security: aiokafka kwargs for TLS / SASL (``streams.security.kafka_security``); empty: PLAINTEXT.
    """

    bootstrap_servers: str
    topic: str = "products"
    checkpoint_topic: str = "products.checkpoints"
    source_id: str = "catalog"
    page_size: int = 100
    topic_partitions: int = 3
    retry_delay: float = 1.0
    max_page_failures: int = 30
    hold_before_commit_page: int | None = None
    security: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The committed position: the cursor of the next page (None with done: finished)."""

    cursor: str | None = None
    done: bool = False
    pages: int = 0
    products: int = 0

    def encode(self) -> bytes:
        return json.dumps({
            "cursor": self.cursor, "done": self.done, "pages": self.pages, "products": self.products,
            "at": int(time.time() * 1000),
        }).encode()

    @classmethod
    def decode(cls, value: bytes) -> Checkpoint:
        data = json.loads(value)
        return cls(data.get("cursor"), bool(data.get("done")), int(data.get("pages", 0)), int(data.get("products", 0)))


class CatalogSource:
    """Copies the catalog to a topic, one transaction per page, resuming from its checkpoint."""

    def __init__(self, settings: CatalogSourceSettings, catalog: CatalogConnector, serde: AvroSerde | None = None,
                 progress: Progress | None = None):
        self.settings = settings
        self.catalog = catalog
        self.serde = serde or AvroSerde(EmbeddedRegistry.load())
        self.progress = progress  # counts the pages committed (streams.progress)

    async def run(self) -> Checkpoint:
        """Produce every remaining page; return the final checkpoint."""
        s = self.settings
        await ensure_source_topics(s)
        async with producer(s.bootstrap_servers, security=s.security,
                            transactional_id=f"streams-source.{s.source_id}") as kafka:
            # The first transaction waits for the producer id, which fences a previous
            # incarnation and aborts its open transaction: only then is the checkpoint final.
            await kafka.begin_transaction()
            in_transaction = True
            try:
                checkpoint = await read_checkpoint(s.bootstrap_servers, s.checkpoint_topic, s.source_id,
                                                   security=s.security)
                log.info("catalog source %s: resuming at %s", s.source_id, checkpoint)
                self._show(checkpoint)
                while not checkpoint.done:
                    page = await self._fetch(checkpoint.cursor)
                    checkpoint = await self._write(kafka, page, checkpoint)
                    in_transaction = False
                    self._show(checkpoint)
                    log.info("catalog source %s: page %d committed, %d products, next cursor %s",
                             s.source_id, checkpoint.pages, checkpoint.products, checkpoint.cursor)
                    if not checkpoint.done:
                        await kafka.begin_transaction()
                        in_transaction = True
            finally:
                if in_transaction:
                    with contextlib.suppress(Exception):
                        await kafka.abort_transaction()
        return checkpoint

    def _show(self, checkpoint: Checkpoint) -> None:
        if self.progress is not None:
            self.progress.note(f"{checkpoint.products} products")
            self.progress.update_to(checkpoint.pages)

    async def _fetch(self, cursor: str | None) -> CatalogPage:
        failures = 0
        while True:
            try:
                return await self.catalog.page(cursor, self.settings.page_size)
            except TransientError as exc:
                failures += 1
                if failures >= self.settings.max_page_failures:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self.settings.retry_delay
                log.warning("catalog source %s: page failed (%s), again in %.1f s", self.settings.source_id, exc, delay)
                await asyncio.sleep(delay)

    async def _write(self, kafka: AIOKafkaProducer, page: CatalogPage, before: Checkpoint) -> Checkpoint:
        s = self.settings
        for item in page.items:
            record = product_record(item)
            await kafka.send(s.topic, self.serde.encode(PRODUCT, record), key=record["product_id"].encode())
        after = Checkpoint(
            page.next_cursor, page.next_cursor is None, before.pages + 1, before.products + len(page.items)
        )
        await kafka.send(s.checkpoint_topic, after.encode(), key=s.source_id.encode())
        if after.pages == s.hold_before_commit_page:
            await kafka.flush()
            log.warning("catalog source %s: holding before the commit of page %d", s.source_id, after.pages)
            await asyncio.Event().wait()
        await kafka.commit_transaction()
        return after


def product_record(item: dict[str, Any]) -> dict[str, Any]:
    """Map one API product to the Product record; PermanentError when it does not fit."""
    record: dict[str, Any] = {}
    for field in ("product_id", "sku", "name", "category", "currency"):
        value = item.get(field)
        if not isinstance(value, str) or not value:
            raise PermanentError(f"catalog: product field {field!r} missing or not a string", connector="catalog")
        record[field] = value
    for field in ("price_cents", "updated_at"):
        value = item.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PermanentError(f"catalog: product field {field!r} missing or not a count", connector="catalog")
        record[field] = value
    return record


async def ensure_source_topics(settings: CatalogSourceSettings) -> None:
    """Create the product topic and the compacted checkpoint topic if missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **settings.security)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.topic, settings.topic_partitions, 1),
            NewTopic(settings.checkpoint_topic, 1, 1, topic_configs={"cleanup.policy": "compact"}),
        ]
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        deadline = time.monotonic() + 30
        while not {settings.topic, settings.checkpoint_topic} <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError("source topics not visible after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def read_checkpoint(bootstrap: str, topic: str, source_id: str, timeout: float = 30.0, *,
                          security: Mapping[str, Any] | None = None) -> Checkpoint:
    """The last committed checkpoint of ``source_id`` (a fresh one if there is none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed", **(security or {})
    )
    await consumer.start()
    try:
        count = await partition_count(bootstrap, topic, security=security)
        tps = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
        found = Checkpoint()
        key = source_id.encode()
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"checkpoint topic {topic} not read to its end in {timeout} s")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    if record.key == key and record.value is not None:
                        found = Checkpoint.decode(record.value)
        return found
    finally:
        await consumer.stop()


def kafka_security_from_environment() -> dict[str, Any]:
    """The Kafka client settings the worker would use, from its settings in the environment (or .env).

    ValueError naming the bad setting (never its value) when they are invalid or unusable.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from streams.security import kafka_security
    from streams.settings import Settings, register_settings_secrets

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                             for err in exc.errors(include_input=False))
        raise ValueError(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # a *_FILE secret that cannot be read, or a value and a file both set
        raise ValueError(f"invalid settings: {exc}") from None
    register_settings_secrets(settings)
    return kafka_security(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.sources.catalog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--base-url", default=os.environ.get("STREAMS_CATALOG_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--topic", default="products")
    parser.add_argument("--checkpoint-topic", default="products.checkpoints")
    parser.add_argument("--source-id", default="catalog")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--hold-before-commit-page", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        security = kafka_security_from_environment()
    except ValueError as exc:
        log.error("catalog source %s: %s", args.source_id, exc)
        return 2
    settings = CatalogSourceSettings(
        bootstrap_servers=args.bootstrap_servers, topic=args.topic, checkpoint_topic=args.checkpoint_topic,
        source_id=args.source_id, page_size=args.page_size, topic_partitions=args.partitions,
        hold_before_commit_page=args.hold_before_commit_page, security=security,
    )

    async def run() -> Checkpoint:
        async with CatalogConnector(HttpSettings(base_url=args.base_url)) as catalog:
            with progress(f"catalog source {settings.source_id}", unit="pages") as shown:
                return await CatalogSource(settings, catalog, progress=shown).run()

    try:
        final = asyncio.run(run())
    except PermanentError as exc:
        log.error("catalog source %s stopped: %s", settings.source_id, exc)
        return 2
    log.info("catalog source %s: done, %d products in %d pages", settings.source_id, final.products, final.pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
