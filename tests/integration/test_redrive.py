"""`streams dlq replay` exactly once: SIGKILLed at random points and run again, each letter lands once.

Each DLQ is filled directly (raw bytes with the headers a worker writes, as in test_progress.py).
The CLI runs as a real process. What reached the input topic is counted by confluent-kafka
(librdkafka, a client other than the one replay uses) reading read_committed, as the worker does:
an aborted batch of a killed replay must not count, a committed one must not be replayed again.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.kafka.clients import end_offsets
from streams.names import Header, dlq_topic, replay_ledger_topic
from tests.integration.harness import fill_dlq

pytestmark = pytest.mark.integration

PARTITIONS = 4
_REPLAY = [sys.executable, "-m", "streams", "dlq", "replay"]


def _env(bootstrap: str, pipeline: str, input_topic: str) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAMS_APP": "pipelines.orders:pipeline",
            "STREAMS_PIPELINE": pipeline, "STREAMS_INPUT_TOPIC": input_topic, "STREAMS_PROGRESS": "lines"}


def _read(bootstrap: str, topic: str, isolation: str, at_least: int, idle: float = 4.0,
          deadline: float = 120.0) -> list[tuple[str, str, int]]:
    """(replay-of, event id, timestamp ms) of each record of ``topic`` that a confluent-kafka consumer
    reading ``isolation`` gets; reads until ``at_least`` came and then nothing for ``idle`` seconds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"redrive-check-{os.getpid()}-{time.time()}",
                         "enable.auto.commit": False, "isolation.level": isolation})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        found: list[tuple[str, str, int]] = []
        give_up = time.monotonic() + deadline
        last = time.monotonic()
        while time.monotonic() < give_up and (len(found) < at_least or time.monotonic() - last < idle):
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                continue
            headers = {k: (v or b"").decode() for k, v in message.headers() or []}
            found.append((headers[Header.REPLAY_OF], headers[Header.EVENT_ID], message.timestamp()[1]))
            last = time.monotonic()
        return found
    finally:
        consumer.close()


async def test_a_replay_killed_five_times_at_random_points_replays_each_letter_exactly_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    letters = 4_000
    pipeline, input_topic = f"redrive-{unique}", f"redrive-{unique}.in"
    await fill_dlq(kafka_bootstrap, pipeline, input_topic, letters)
    env = _env(kafka_bootstrap, pipeline, input_topic)
    command = [*_REPLAY, "--rate", "500"]  # a replay from scratch takes about 7 s after its start-up
    chance = random.Random(unique)
    kills: list[str] = []

    async def written() -> int:  # everything on the input topic, committed or not, and commit markers
        return sum((await end_offsets(kafka_bootstrap, input_topic)).values())

    for run in range(5):
        before = await written()
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if run < 2:  # anywhere: start-up, reading the DLQ or the ledger, fencing, replaying
                await asyncio.sleep(chance.uniform(0.2, 2.0))
                point = "at random"
            else:  # in the middle of replaying: once it has written, a little later
                give_up = time.monotonic() + 60
                while await written() == before and process.poll() is None and time.monotonic() < give_up:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(chance.uniform(0.0, 0.6))
                point = "mid-replay"
            assert process.poll() is None, f"run {run} finished before it was killed: test too fast to say much"
            process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)
        kills.append(f"{point}, {await written() - before} offsets written")

    done = await asyncio.to_thread(subprocess.run, command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"selected {letters}, replayed " in done.stdout, done.stdout

    committed = await asyncio.to_thread(_read, kafka_bootstrap, input_topic, "read_committed", letters)
    replays = Counter(replay_of for replay_of, _, _ in committed)
    assert set(replays) == {f"{dlq_topic(pipeline)}:{n % PARTITIONS}:{n // PARTITIONS}" for n in range(letters)}
    assert all(count == 1 for count in replays.values()), replays.most_common(3)
    assert sorted(event_id for _, event_id, _ in committed) == sorted(f"evt-{n}" for n in range(letters))

    everything = await asyncio.to_thread(_read, kafka_bootstrap, input_topic, "read_uncommitted", letters)
    aborted = len(everything) - len(committed)
    print(f"\n{letters} letters, 5 kills ({'; '.join(kills)}): each letter once read_committed; "
          f"{aborted} records of aborted batches seen by a read_uncommitted reader")
    assert aborted >= 0
    assert any(not kill.endswith(" 0 offsets written") for kill in kills)  # some kills cut a replay short
    again = await asyncio.to_thread(subprocess.run, command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"replayed 0 to {input_topic}, skipped {letters}" in again.stdout


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


async def test_a_dry_run_writes_nothing_and_creates_no_topic(kafka_bootstrap: str, unique: str,
                                                           tmp_path: Path) -> None:
    pipeline, input_topic = f"redrive-dry-{unique}", f"redrive-dry-{unique}.in"
    await fill_dlq(kafka_bootstrap, pipeline, input_topic, 5)
    before = await asyncio.to_thread(_topics, kafka_bootstrap)
    assert replay_ledger_topic(pipeline) not in before

    done = await asyncio.to_thread(subprocess.run, [*_REPLAY, "--dry-run"], cwd=tmp_path,
                                   env=_env(kafka_bootstrap, pipeline, input_topic), stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"selected 5, would replay 5 to {input_topic}, skipped 0" in done.stdout
    after = await asyncio.to_thread(_topics, kafka_bootstrap)
    assert {topic for topic in after - before if pipeline in topic} == set()  # others share the broker
    assert replay_ledger_topic(pipeline) not in after
    assert sum((await end_offsets(kafka_bootstrap, input_topic)).values()) == 0


async def test_a_rate_below_one_a_second_is_honoured(kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    pipeline, input_topic = f"redrive-slow-{unique}", f"redrive-slow-{unique}.in"
    await fill_dlq(kafka_bootstrap, pipeline, input_topic, 3)
    env = _env(kafka_bootstrap, pipeline, input_topic)

    began = time.monotonic()
    done = await asyncio.to_thread(subprocess.run, [*_REPLAY, "--rate", "0.5"], env=env, cwd=tmp_path,
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - began

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"replayed 3 to {input_topic}" in done.stdout
    records = await asyncio.to_thread(_read, kafka_bootstrap, input_topic, "read_committed", 3, 1.0)
    stamps = sorted(timestamp for _, _, timestamp in records)
    assert len(stamps) == 3
    gaps = [(later - earlier) / 1000 for earlier, later in pairwise(stamps)]
    print(f"\n3 letters at 0.5/s: {elapsed:.1f} s in all (with start-up), produced {gaps} s apart")
    assert all(1.8 <= gap <= 2.5 for gap in gaps), gaps  # one every 2 s, not one a second
    assert 4.0 <= elapsed < 4.0 + 10.0  # the 4 s of pacing plus the command's start-up and reads


@pytest.mark.parametrize("rate", ["0", "-1"])
def test_a_rate_that_is_not_positive_is_a_clear_error(rate: str, tmp_path: Path) -> None:
    done = subprocess.run([*_REPLAY, "--rate", rate, "--dry-run"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                          env={**os.environ, "STREAMS_APP": "pipelines.orders:pipeline",
                               "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Invalid value for '--rate'" in done.stderr and "x>0" in done.stderr, done.stderr
