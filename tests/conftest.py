"""Shared fixtures: a real Kafka broker, the sandbox API, unique names per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator

import pytest

from sandbox.server import SandboxConfig, SandboxServer


def _docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: KAFKA_BOOTSTRAP_SERVERS, else testcontainers, else the project's local broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from streams.kafka.local import local_broker_running, start_local_broker, stop_local_broker

    already_running = local_broker_running()
    bootstrap = start_local_broker()
    try:
        yield bootstrap
    finally:
        if not already_running:
            stop_local_broker()


class SandboxThread:
    """The sandbox API on its own event loop in a thread, so blocking test code cannot stall it."""

    def __init__(self, latency_ms: float = 0.0, config: SandboxConfig | None = None) -> None:
        self.server = SandboxServer(latency_ms=latency_ms, config=config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox", daemon=True)

    def __enter__(self) -> SandboxThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread() as running:
        yield running


@pytest.fixture(scope="session")
def slow_sandbox() -> Iterator[SandboxThread]:
    """The sandbox answering after 5 ms, so that a worker has events in flight."""
    with SandboxThread(latency_ms=5.0) as running:
        yield running


@pytest.fixture
def fault_sandbox() -> Iterator[SandboxThread]:
    """A sandbox of this test's own, whose faults the test sets through the admin endpoint."""
    with SandboxThread() as running:
        yield running


@pytest.fixture
def unique() -> str:
    """A short id that makes topic and group names unique to one test."""
    return uuid.uuid4().hex[:10]
