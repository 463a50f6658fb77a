"""A broker that stops and comes back: the worker waits calmly, loses nothing, and says so briefly.

The test runs a broker of its own (the project's script, another port and state folder), so
it can stop it while a worker has events in flight, gracefully for 45 s (SIGTERM: a controlled
shutdown, leaders go to -1; longer than aiokafka's default 40 s wait for a leader) or with SIGKILL
for 20 s, then start it again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from streams.kafka.local import SCRIPT
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import TopicCollector, headers_of, pipeline_under_test

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

EVENTS = 20_000
OUTAGES = {"graceful": 45.0, "kill": 20.0}  # graceful: past aiokafka's 40 s default batch expiry


def _free_port_pair() -> int:
    """A port whose next one is free too (the controller listener takes KAFKA_PORT+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free pair of ports")


class OwnBroker:
    def __init__(self, state: Path) -> None:
        self.env = {**os.environ, "KAFKA_PORT": str(_free_port_pair()), "KAFKA_STATE_DIR": str(state)}
        self.env.pop("KAFKA_SECURE", None)

    def run(self, command: str) -> str:
        done = subprocess.run(["bash", str(SCRIPT), command], env=self.env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    def pid(self) -> int:
        status = self.run("status")  # "running at 127.0.0.1:PORT (pid N)"
        return int(status.rsplit("pid ", 1)[1].rstrip(")"))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['KAFKA_PORT']}"


@pytest.fixture
def own_broker(tmp_path: Path) -> OwnBroker:
    broker = OwnBroker(tmp_path / "kafka")
    broker.run("start")
    try:
        yield broker  # type: ignore[misc]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=broker.env, capture_output=True, timeout=120)


@pytest.mark.parametrize("stop", ["graceful", "kill"])
async def test_a_stopped_broker_costs_a_calm_wait_and_a_few_log_lines(
    own_broker: OwnBroker, slow_sandbox: SandboxThread, unique: str, tmp_path: Path, stop: str
) -> None:
    runtime = "aiokafka"
    pipeline = pipeline_under_test(own_broker.bootstrap, slow_sandbox.url, unique, tmp_path)
    pipeline.runtime = runtime
    await pipeline.create_topics(partitions=4)
    orders = sample_orders(EVENTS, customers=2000)
    await pipeline.produce(orders)
    worker = pipeline.worker(0, ORDERS_ENRICH_WITH="customers", STREAMS_LOG_LEVEL="info,aiokafka=info").start()
    try:
        async with TopicCollector(own_broker.bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
            await seen.wait_until(lambda r: len(r) >= 2_000, deadline=120, what="2,000 outputs")
        lines_before = _lines(worker.log_path)
        assert worker.pid is not None
        cpu_before = _cpu_seconds(worker.pid)
        stopped_at = time.monotonic()
        if stop == "graceful":
            await asyncio.to_thread(own_broker.run, "stop")  # SIGTERM: a controlled shutdown
        else:
            os.kill(own_broker.pid(), signal.SIGKILL)
        await asyncio.sleep(max(0.0, OUTAGES[stop] - (time.monotonic() - stopped_at)))
        cpu_outage = _cpu_seconds(worker.pid) - cpu_before
        outage_seconds = time.monotonic() - stopped_at
        outage_lines = _lines(worker.log_path)[len(lines_before):]
        await asyncio.to_thread(own_broker.run, "start")
        async with TopicCollector(own_broker.bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
            await seen.wait_until(lambda r: len({headers_of(x)[Header.EVENT_ID] for x in r}) >= EVENTS,
                                  deadline=240, what="every event after the broker came back")
        assert worker.alive, worker.log_tail()
    finally:
        worker.stop()

    ids = Counter(headers_of(r)[Header.EVENT_ID] for r in seen.records)
    assert set(ids) == {o["event_id"] for o in orders}, "an event was lost"
    assert not seen.on(pipeline.dlq), "an event was dead-lettered for the outage"
    kinds = Counter(line.split('"message": "', 1)[-1][:60] for line in outage_lines)
    print(f"\n{runtime}: broker stopped ({stop}) for {outage_seconds:.1f} s: worker CPU {cpu_outage:.2f} s, "
          f"{len(outage_lines)} log lines during the outage; most common: {kinds.most_common(3)}; "
          f"{sum(ids.values()) - EVENTS} duplicates")
    assert len(outage_lines) <= 15 + outage_seconds, "\n".join(outage_lines[:20])
    assert cpu_outage < 0.25 * outage_seconds, f"{cpu_outage:.1f} s of CPU in a {outage_seconds:.0f} s outage"


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
