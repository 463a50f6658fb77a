"""The catalog source as a process, against the real sandbox and a real broker: SIGKILL, restart, resume."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from sandbox.catalog import product
from sandbox.server import SandboxConfig
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.sources.catalog import PRODUCT, ensure_source_topics, read_checkpoint
from streams.sources.catalog import CatalogSourceSettings as SourceSettings
from tests.connectors.conftest import SandboxFactory, wait_for

pytestmark = pytest.mark.integration

PRODUCTS = 400
PAGE = 10
PAGES = PRODUCTS // PAGE
HELD_PAGE = 13
SERDE = AvroSerde(EmbeddedRegistry.load())


async def read_topic(
    bootstrap: str, topic: str, isolation_level: str = "read_committed", deadline: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its end (the last stable offset when read_committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"topic {topic} has no partitions"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        give_up = time.monotonic() + deadline
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < give_up, "topic not read to its end in time"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def product_ids(records: list[ConsumerRecord[bytes, bytes]]) -> Counter[str]:
    return Counter(SERDE.decode(r.value, PRODUCT)["product_id"] for r in records)


@pytest.mark.parametrize("kill_point", ["during a page fetch", "mid-transaction"])
async def test_a_source_killed_midway_resumes_from_its_checkpoint_and_every_product_appears_once(
    kafka_bootstrap: str, start_sandbox: SandboxFactory, unique: str, tmp_path: Path, kill_point: str
) -> None:
    settings = SourceSettings(kafka_bootstrap, f"products-{unique}", f"products-{unique}.checkpoints", f"src-{unique}")
    command = [
        sys.executable, "-m", "streams.sources.catalog", "--bootstrap-servers", kafka_bootstrap,
        "--topic", settings.topic, "--checkpoint-topic", settings.checkpoint_topic, "--source-id", settings.source_id,
        "--page-size", str(PAGE), "--partitions", "3",
    ]
    await ensure_source_topics(settings)
    slow_pages = {"products": {"latency": {"distribution": "fixed", "ms": 20}}}
    async with start_sandbox(SandboxConfig(catalog_size=PRODUCTS, faults=slow_pages)) as api:
        hold = ["--hold-before-commit-page", str(HELD_PAGE)] if kill_point == "mid-transaction" else []
        with (tmp_path / "first.log").open("wb") as log:
            first = await asyncio.create_subprocess_exec(*command, *hold, "--base-url", api.url, stderr=log)
            try:
                if kill_point == "mid-transaction":  # the held page's products are on the topic, uncommitted
                    async def held_page_written() -> bool:
                        records = await read_topic(kafka_bootstrap, settings.topic, "read_uncommitted")
                        return f"P{HELD_PAGE * PAGE:06d}" in product_ids(records)

                    await wait_for(held_page_written, deadline=60, what="the held page on the topic")
                else:  # a request in flight, its response 20 ms away
                    await wait_for(lambda: api.stats.requests["products"] >= PAGES // 3, deadline=60,
                                   what="a third of the pages fetched")
                assert first.returncode is None, "the first run must still be going when it is killed"
            finally:
                first.send_signal(signal.SIGKILL)
                await first.wait()
        fetched_by_first = api.stats.requests["products"]
        at_kill = await read_checkpoint(kafka_bootstrap, settings.checkpoint_topic, settings.source_id)
        assert 0 < at_kill.pages < PAGES and not at_kill.done
        if kill_point == "mid-transaction":
            assert at_kill.pages == HELD_PAGE - 1 and fetched_by_first == HELD_PAGE

        with (tmp_path / "second.log").open("wb") as log:
            second = await asyncio.create_subprocess_exec(*command, "--base-url", api.url, stderr=log)
            assert await asyncio.wait_for(second.wait(), 60) == 0, (tmp_path / "second.log").read_text()
        resumed = api.stats.of("products")[fetched_by_first]

    assert "cursor=" in resumed.path_qs, "the restart did not begin at the first page"
    assert api.stats.requests["products"] == fetched_by_first + PAGES - at_kill.pages, "only the uncommitted pages"
    records = await read_topic(kafka_bootstrap, settings.topic)
    seen = product_ids(records)
    assert seen == Counter(f"P{n:06d}" for n in range(1, PRODUCTS + 1)), (
        f"{len(records)} records, duplicates: {[k for k, c in seen.items() if c > 1][:5]}"
    )
    if kill_point == "mid-transaction":  # the killed transaction's records are in the log, aborted
        everything = product_ids(await read_topic(kafka_bootstrap, settings.topic, "read_uncommitted"))
        assert {k for k, c in everything.items() if c == 2} == {f"P{n:06d}" for n in range(121, 131)}
    first_record = records[0]
    assert first_record.key is not None
    decoded, expected = SERDE.decode(first_record.value, PRODUCT), product(int(first_record.key.decode()[1:]))
    assert int(decoded.pop("updated_at").timestamp() * 1000) == expected.pop("updated_at")
    assert decoded == expected, "the record is the API's product, keyed by its id"
    final = await read_checkpoint(kafka_bootstrap, settings.checkpoint_topic, settings.source_id)
    assert final.done and final.pages == PAGES and final.products == PRODUCTS
    print(f"killed {kill_point} after {fetched_by_first} page fetches with {at_kill.pages} pages committed; "
          f"the restart fetched the {PAGES - at_kill.pages} pages from there")
