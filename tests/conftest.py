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
from testcontainers.core.container import DockerContainer

from sandbox.server import SandboxConfig, SandboxServer

KAFKA_IMAGE = "apache/kafka:4.1.1"  # the broker docker-compose.yml runs too
KAFKA_PORT = 9092  # the listener clients on the host reach, through the mapped port
KAFKA_START_SCRIPT = "/tmp/streams-kafka-start.sh"
KAFKA_START_READY = "/tmp/streams-kafka-start.ready"


def kafka_container(image: str = KAFKA_IMAGE) -> DockerContainer:
    """A single-node KRaft broker of the apache/kafka image, built and not started.

    testcontainers' own ``KafkaContainer`` is made for Confluent's cp-kafka: its ``with_kraft()``
    refuses any tag below 7.0.0 (apache/kafka's 4.1.1 is "too old") and its start script runs
    /etc/confluent/docker/configure, which apache/kafka does not have. This one sets the
    apache/kafka image's own KAFKA_* variables (its /etc/kafka/docker/run turns them into
    server.properties and formats the storage) and, as the image's entrypoint cannot know the port
    Docker maps, waits for a start script that ``start()`` writes once the port is known: it exports
    KAFKA_ADVERTISED_LISTENERS with the host and mapped port, then runs /etc/kafka/docker/run.
    """
    return _ApacheKafkaContainer(image)


class _ApacheKafkaContainer(DockerContainer):
    def __init__(self, image: str) -> None:
        super().__init__(image)
        self.with_exposed_ports(KAFKA_PORT)
        self.with_envs(
            CLUSTER_ID="5L6g3nShT-eMCtK--X86sw",
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            # PLAINTEXT: clients on the host, advertised as host:mapped port at start; BROKER: between
            # broker and itself inside the container; CONTROLLER: the KRaft quorum of one.
            KAFKA_LISTENERS=f"PLAINTEXT://0.0.0.0:{KAFKA_PORT},BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_INTER_BROKER_LISTENER_NAME="BROKER",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9094",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
        # The ready file comes after the script, so the script is never run half-written.
        self.with_command(["sh", "-c", f"while [ ! -f {KAFKA_START_READY} ]; do sleep 0.1; done; "
                                       f"exec sh {KAFKA_START_SCRIPT}"])

    def start(self) -> _ApacheKafkaContainer:
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        super().start()
        advertised = f"PLAINTEXT://{self.get_bootstrap_server()},BROKER://localhost:9093"
        script = f"export KAFKA_ADVERTISED_LISTENERS={advertised}\nexec /etc/kafka/docker/run\n"
        self.copy_into_container(script.encode(), KAFKA_START_SCRIPT, mode=0o755)
        self.copy_into_container(b"", KAFKA_START_READY)
        LogMessageWaitStrategy(r"Kafka Server started").with_startup_timeout(120).wait_until_ready(self)
        return self

    def get_bootstrap_server(self) -> str:
        return f"{self.get_container_host_ip()}:{self.get_exposed_port(KAFKA_PORT)}"


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
        with kafka_container(KAFKA_IMAGE) as container:
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
