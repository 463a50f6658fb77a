"""STREAMS_GUARANTEE=exactly-once (docs/exactly-once.md) on a real broker: a worker SIGKILLed twice
leaves each event's result once for read_committed consumers, counted with a third-party client
(confluent-kafka, librdkafka); the Faust runtime refuses the setting."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipelines.orders_samples import sample_orders
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import pipeline_under_test, wait_for

pytestmark = pytest.mark.integration

EVENTS = 20_000


class CommittedReader:
    """What a ``read_committed`` consumer sees of ``topics``, from the beginning: librdkafka's
    consumer in a thread of its own, the event id of each record kept with its topic."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: dict[str, int]) -> None:
        self.records: list[tuple[str, str]] = []  # (topic, event id)
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"eos-reader-{time.monotonic_ns()}",
                                   "isolation.level": "read_committed", "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest"})
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions[t])])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="read-committed", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(num_messages=5000, timeout=0.2):
                    if message.error() is not None:
                        continue
                    headers = dict(message.headers() or [])
                    raw = headers.get(Header.EVENT_ID)
                    event_id = raw.decode() if isinstance(raw, bytes) else str(raw or "")
                    with self._lock:
                        self.records.append((str(message.topic()), event_id))
        finally:
            self._consumer.close()

    def __enter__(self) -> CommittedReader:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def event_ids(self) -> list[str]:
        with self._lock:
            return [event_id for _, event_id in self.records]

    def distinct(self) -> int:
        return len(set(self.event_ids()))


async def test_a_worker_killed_twice_leaves_each_result_once_for_read_committed_consumers(
    kafka_bootstrap: str, slow_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, slow_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=8)
    orders = sample_orders(EVENTS, customers=2000)
    await pipeline.produce(orders)
    kills = sorted(random.sample(range(2_000, 16_000), 2))
    env = {"STREAMS_GUARANTEE": "exactly-once"}

    with CommittedReader(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq],
                         {pipeline.output_topic: 8, pipeline.dlq: 1}) as seen:
        for index, kill_after in enumerate(kills):
            worker = pipeline.worker(index, **env).start()
            try:
                await wait_for(lambda: seen.distinct() >= kill_after, deadline=240,  # noqa: B023 - awaited here
                               what=f"{kill_after} committed results (worker {index})")
            except AssertionError:
                worker.kill()
                raise AssertionError(worker.log_tail()) from None
            worker.kill()
        with pipeline.worker(len(kills), **env) as last:
            await wait_for(lambda: seen.distinct() >= EVENTS, deadline=300,
                           what=f"every event's result, committed ({last.log_tail(5)})")
            await asyncio.sleep(3)  # a duplicate committed late would show by now

    counts = Counter(seen.event_ids())
    assert set(counts) == {o["event_id"] for o in orders}
    duplicates = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} events seen more than once by a read_committed consumer"
    print(f"\nSIGKILL at {kills[0]} and {kills[1]} committed results; {EVENTS} events, "
          f"{sum(1 for t, _ in seen.records if t == pipeline.dlq)} dead-lettered, 0 duplicates (read_committed)")


async def test_the_faust_runtime_refuses_exactly_once(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=1)
    worker = pipeline.worker(0, STREAMS_RUNTIME="faust", STREAMS_GUARANTEE="exactly-once").start()
    try:
        await wait_for(lambda: not worker.alive, deadline=60, what="the Faust worker to exit")
    finally:
        code = worker.kill()
    assert code not in (0, None), worker.log_tail()
    log = worker.log_path.read_text(errors="replace")
    assert "STREAMS_GUARANTEE=exactly-once needs the aiokafka runtime" in log, worker.log_tail()


async def test_a_worker_fenced_by_one_with_its_transactional_id_stops_and_nothing_is_seen_twice(
    kafka_bootstrap: str, slow_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, slow_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=4)
    before = sample_orders(5_000, customers=500, seed=3)
    after = sample_orders(2_000, customers=500, seed=4)  # written once the successor has fenced the first
    env = {"STREAMS_GUARANTEE": "exactly-once", "STREAMS_TRANSACTIONAL_ID": f"{unique}.worker"}
    await pipeline.produce(before)

    with CommittedReader(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq],
                         {pipeline.output_topic: 4, pipeline.dlq: 1}) as seen:
        first = pipeline.worker(0, **env).start()
        try:
            await wait_for(lambda: seen.distinct() >= 500, deadline=120, what="500 committed results")
            with pipeline.worker(1, **env) as second:  # a restart of "the same" worker while the old one still runs
                # The successor logs its partitions after its producer has its id, which fenced the
                # first; a fenced producer learns it at its next transaction, so the first gets
                # events to process from here on, whether or not it still had some.
                await wait_for(lambda: "owning" in second.log_path.read_text(errors="replace"), deadline=60,
                               what="the second worker to own partitions")
                await pipeline.produce(after)
                await wait_for(lambda: not first.alive, deadline=90, what="the fenced worker to stop")
                await wait_for(lambda: seen.distinct() >= len(before) + len(after), deadline=180,
                               what="every event's result")
                await asyncio.sleep(3)
        finally:
            code = first.kill()
    assert code == 1, first.log_tail()
    assert "transaction" in first.log_tail(60), first.log_tail()
    counts = Counter(seen.event_ids())
    assert set(counts) == {o["event_id"] for o in before + after}
    assert [event_id for event_id, n in counts.items() if n > 1] == []
