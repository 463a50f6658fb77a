"""Duplicates by event id: detected from the processed-ids topic, counted, and dropped on request."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from streams.telemetry.testing import scrape
from tests.conftest import SandboxThread
from tests.integration.harness import (
    TopicCollector,
    committed_offsets,
    pipeline_under_test,
    telemetry_url,
    wait_for,
)

pytestmark = pytest.mark.integration


async def test_redelivered_events_are_counted_and_dropped_in_drop_mode(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=2)
    orders = sample_orders(300, seed=11)

    async def committed() -> int:
        return sum((await committed_offsets(kafka_bootstrap, pipeline.name, pipeline.input_topic)).values())

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic]) as seen:
        await pipeline.produce(orders)
        with pipeline.worker(0):
            await seen.wait_until(lambda r: len(r) >= 300, deadline=60, what="first 300 outputs")
            await wait_for(lambda: _at_least(committed, 300), deadline=30, what="offsets committed")

        await pipeline.produce(orders)  # the same events again, as a producer retry or a replay would
        with pipeline.worker(1, STREAMS_DEDUPE="drop") as dropping:
            await wait_for(lambda: _at_least(committed, 600), deadline=60, what="duplicates consumed")
            samples = await scrape(telemetry_url(dropping) + "/metrics")
        assert sum(v for k, v in samples.items() if k.startswith("streams_events_duplicates_total")) == 300
        assert len(seen.records) == 300
        assert re.search(r"duplicates 300 \(dropped 300\)", dropping.log_path.read_text()), dropping.log_tail()

        await pipeline.produce(orders)
        with pipeline.worker(2, STREAMS_DEDUPE="count") as counting:
            await seen.wait_until(lambda r: len(r) >= 600, deadline=60, what="counted duplicates produced")
        assert re.search(r"duplicates 300 \(dropped 0\)", counting.log_path.read_text()), counting.log_tail()


async def _at_least(read: object, target: int) -> bool:
    return await read() >= target  # type: ignore[operator, no-any-return]
