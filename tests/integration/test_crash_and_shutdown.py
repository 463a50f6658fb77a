"""Processing guarantees under SIGKILL and SIGTERM (docs/architecture.md §4), on a real broker."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import (
    TopicCollector,
    committed_offsets,
    headers_of,
    pipeline_under_test,
    wait_for,
)

pytestmark = pytest.mark.integration

EVENTS = 12_000


async def test_a_worker_killed_mid_stream_loses_nothing_after_restart(
    kafka_bootstrap: str, slow_sandbox: SandboxThread, unique: str, tmp_path: Path, runtime: str
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, slow_sandbox.url, unique, tmp_path)
    pipeline.runtime = runtime
    await pipeline.create_topics(partitions=8)
    orders = sample_orders(EVENTS, customers=2000)
    await pipeline.produce(orders)
    kill_after = random.randint(2_000, 9_000)

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
        worker = pipeline.worker(0).start()
        await seen.wait_until(lambda r: len(r) >= kill_after, deadline=180, what=f"{kill_after} outputs")
        worker.kill()
        before_restart = len(seen.records)
        with pipeline.worker(1):
            await seen.wait_until(lambda r: len({headers_of(x)[Header.EVENT_ID] for x in r}) >= EVENTS,
                                  deadline=240, what="every event on the output or in the DLQ")

    counts = Counter(seen.event_ids())
    assert set(counts) == {o["event_id"] for o in orders}
    duplicates = sum(n - 1 for n in counts.values())
    print(f"\nSIGKILL after {before_restart} outputs (target {kill_after}); {EVENTS} events, "
          f"{len(seen.on(pipeline.dlq))} dead-lettered, {duplicates} duplicates after restart")


async def test_sigterm_under_load_drains_commits_and_a_restart_redoes_nothing_committed(
    kafka_bootstrap: str, slow_sandbox: SandboxThread, unique: str, tmp_path: Path, runtime: str
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, slow_sandbox.url, unique, tmp_path)
    pipeline.runtime = runtime
    await pipeline.create_topics(partitions=8)
    orders = sample_orders(EVENTS, customers=2000)
    await pipeline.produce(orders)
    deadline = 10.0

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
        worker = pipeline.worker(0, STREAMS_DRAIN_DEADLINE=str(deadline)).start()
        await seen.wait_until(lambda r: len(r) >= 3_000, deadline=180, what="3000 outputs")
        began = time.monotonic()
        code = worker.stop(timeout=60)
        stopped_in = time.monotonic() - began
        assert code == 0, worker.log_tail()
        assert stopped_in < deadline + 10, f"SIGTERM took {stopped_in:.1f} s"

        committed = await committed_offsets(kafka_bootstrap, pipeline.name, pipeline.input_topic)
        assert sum(committed.values()) >= 3_000 - 500  # committed on the way out, not just periodically
        await wait_for(lambda: len(seen.records) >= sum(committed.values()), 30, "outputs of committed events")
        first_run = len(seen.records)

        with pipeline.worker(1):
            await seen.wait_until(lambda r: len({headers_of(x)[Header.EVENT_ID] for x in r}) >= EVENTS,
                                  deadline=240, what="every event after restart")

    redone = Counter(
        (int(h[Header.ORIGIN_PARTITION]), int(h[Header.ORIGIN_OFFSET]))
        for h in map(headers_of, seen.records[first_run:])
    )
    redone_committed = [tp for tp in redone if tp[1] < committed.get(tp[0], 0)]
    assert redone_committed == [], f"{len(redone_committed)} committed events were processed again"
    assert set(seen.event_ids()) == {o["event_id"] for o in orders}
    print(f"\nSIGTERM drained in {stopped_in:.1f} s; committed {sum(committed.values())} of {first_run} "
          f"outputs; restart redid {len(redone)} uncommitted, 0 committed")
