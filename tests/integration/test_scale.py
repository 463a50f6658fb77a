"""Scaling out mid-stream: workers 1 → 2 → 3, then one killed with SIGKILL. Nothing is lost.

Also reports what a person sizing a deployment wants to know: the output rate with each
number of workers, the longest pause in the output around each rebalance, and the duplicates
that the kill caused. Those figures are printed, not asserted (README, Benchmarks: speed is a
benchmark's business); on this 2-core machine the workers share two cores with the broker,
so the rate cannot grow with the worker count the way it would on separate hosts.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import TopicCollector, headers_of, pipeline_under_test

pytestmark = pytest.mark.integration

EVENTS = 30_000


async def test_workers_join_and_one_is_killed_mid_stream_without_losing_an_event(
    kafka_bootstrap: str, slow_sandbox: SandboxThread, unique: str, tmp_path: Path, runtime: str
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, slow_sandbox.url, unique, tmp_path)
    pipeline.runtime = runtime
    await pipeline.create_topics(partitions=8)
    orders = sample_orders(EVENTS, customers=5000)
    await pipeline.produce(orders)
    env = {"ORDERS_ENRICH_WITH": "customers"}
    marks: list[tuple[str, float, int]] = []  # (what happened, when, outputs so far)

    def mark(what: str) -> None:
        marks.append((what, time.monotonic(), len(seen.records)))

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
        first = pipeline.worker(0, **env).start()
        mark("1 worker")
        await seen.wait_until(lambda r: len(r) >= 6_000, deadline=180, what="6,000 outputs")
        second = pipeline.worker(1, **env).start()
        mark("2 workers")
        await seen.wait_until(lambda r: len(r) >= 12_000, deadline=180, what="12,000 outputs")
        third = pipeline.worker(2, **env).start()
        mark("3 workers")
        await seen.wait_until(lambda r: len(r) >= 18_000, deadline=180, what="18,000 outputs")
        second.kill()
        mark("2 workers after SIGKILL")
        await seen.wait_until(lambda r: len({headers_of(x)[Header.EVENT_ID] for x in r}) >= EVENTS,
                              deadline=300, what="every event on the output")
        mark("done")
        for worker in (first, third):
            assert worker.alive, worker.log_tail()
            worker.stop()

    counts = Counter(headers_of(r)[Header.EVENT_ID] for r in seen.records)
    assert set(counts) == {o["event_id"] for o in orders}
    duplicates = sum(n - 1 for n in counts.values())
    arrivals = sorted(r.timestamp for r in seen.records)  # broker append times, ms
    report = [f"\n{EVENTS} events, 8 partitions, API 5 ms; {duplicates} duplicates "
              f"({len(seen.on(pipeline.dlq))} dead-lettered)"]
    for (what, began, done_before), (_, ended, done_after) in itertools.pairwise(marks):
        rate = (done_after - done_before) / max(ended - began, 1e-9)
        report.append(f"  {what:<24} {done_after - done_before:>6} outputs in {ended - began:5.1f} s = {rate:7.0f}/s")
    gaps = sorted((b - a for a, b in itertools.pairwise(arrivals)), reverse=True)[:3]
    report.append(f"  longest pauses in the output (rebalances): {', '.join(f'{g / 1000:.2f} s' for g in gaps)}")
    print("\n".join(report))
