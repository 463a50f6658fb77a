"""The testcontainers broker of tests/conftest.py, built without a Docker engine.

The machines that run the suite mostly have no Docker engine (the fixture then starts the local
broker), so these tests replace testcontainers' Docker client by a stand-in and check what the
container would be created with, and the start script it would be given.
"""

from __future__ import annotations

from typing import Any

import pytest
import testcontainers.core.container as tc_container
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from tests.conftest import KAFKA_IMAGE, KAFKA_START_READY, KAFKA_START_SCRIPT, kafka_container


class _NoEngine:
    """What testcontainers' DockerClient would be, minus the connection to an engine."""

    def __init__(self, **_: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def no_docker_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc_container, "DockerClient", _NoEngine)


def test_the_container_is_apache_kafka_in_kraft_mode_with_the_client_port_exposed() -> None:
    container = kafka_container(KAFKA_IMAGE)

    assert container.image.endswith("apache/kafka:4.1.1")
    assert container.ports == {"9092": None}  # mapped to a free host port at start
    env = container.env
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9094"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners == {"PLAINTEXT": "0.0.0.0:9092", "BROKER": "0.0.0.0:9093", "CONTROLLER": "0.0.0.0:9094"}
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols == dict.fromkeys(listeners, "PLAINTEXT")
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert "KAFKA_ADVERTISED_LISTENERS" not in env  # the mapped port is known only after start
    assert not any(key.startswith("KAFKA_ZOOKEEPER") or key == "KAFKA_BROKER_ID" for key in env)
    assert all(isinstance(value, str) for value in env.values())
    # No Confluent paths: the container waits for the start script, then runs apache/kafka's own.
    command = " ".join(container._command or [])
    assert KAFKA_START_READY in command and KAFKA_START_SCRIPT in command
    assert "confluent" not in command


def test_start_advertises_the_mapped_port_then_runs_the_image_s_own_start(monkeypatch: pytest.MonkeyPatch) -> None:
    container = kafka_container(KAFKA_IMAGE)
    copied: list[tuple[str, bytes]] = []
    events: list[str] = []
    monkeypatch.setattr(DockerContainer, "start", lambda self: events.append("container started") or self)
    monkeypatch.setattr(DockerContainer, "get_container_host_ip", lambda self: "localhost")
    monkeypatch.setattr(DockerContainer, "get_exposed_port", lambda self, port: {9092: 32791}[port])
    monkeypatch.setattr(DockerContainer, "copy_into_container",
                        lambda self, data, path, mode=0o644: copied.append((path, data)))
    monkeypatch.setattr(LogMessageWaitStrategy, "wait_until_ready",
                        lambda self, target: events.append(f"waited for {self._message.pattern!r}"))

    assert container.start() is container

    assert [path for path, _ in copied] == [KAFKA_START_SCRIPT, KAFKA_START_READY]  # the script first
    script = copied[0][1].decode()
    assert "export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://localhost:32791,BROKER://localhost:9093\n" in script
    assert script.rstrip().endswith("exec /etc/kafka/docker/run")
    assert events == ["container started", "waited for 'Kafka Server started'"]
    assert container.get_bootstrap_server() == "localhost:32791"


def test_testcontainers_own_kafka_container_refuses_kraft_for_apache_kafka() -> None:
    """Why tests/conftest.py has its own container (testcontainers 4.x, Confluent-only KRaft)."""
    from testcontainers.community.kafka import KafkaContainer

    with pytest.raises(ValueError, match="not supported in Kraft mode"):
        KafkaContainer(KAFKA_IMAGE).with_kraft()
