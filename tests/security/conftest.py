"""The secure broker for the security tests: TLS, SASL (SCRAM-SHA-512 and PLAIN), ACLs.

A second broker (``scripts/kafka.sh`` with ``KAFKA_SECURE=1``), on its own ports and state
folder, so the shared plain broker on 9092 keeps running. Per session: a test CA and the
broker's certificate are made, users and passwords generated, the broker formatted and
started, and stopped at the end. The super user ``admin`` (PLAIN) manages topics and ACLs
through confluent-kafka's AdminClient (aiokafka's has no ACL calls).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.helpers import create_ssl_context
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tests.security.certs import Issued, TestPki

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka.sh"
USERS = ("worker", "shop", "auditor")  # SCRAM-SHA-512 principals: the pipeline, a producer, a reader
PLAIN_USERS = ("legacy",)  # a PLAIN principal, to show that mechanism too
TIMINGS: dict[str, float] = {}


@dataclass
class SecureKafka:
    """The running secure broker and what a test needs to talk to it."""

    bootstrap: str
    port: int
    state: Path
    pki: TestPki
    admin_password: str
    passwords: dict[str, str]
    client_cert: Issued  # a client certificate with an encrypted key (TLS client auth is "requested")
    client_key_password: str
    secret_dir: Path
    _admin: AdminClient | None = field(default=None, repr=False)

    @property
    def ca_file(self) -> Path:
        return self.state.parent / "ca.pem"

    @property
    def server_log(self) -> Path:
        return self.state / "logs" / "server.log"

    def security(self, user: str, mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> dict[str, Any]:
        """aiokafka kwargs for ``user`` (what ``streams.security.kafka_security`` makes from settings)."""
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": create_ssl_context(cafile=str(self.ca_file)),
            "sasl_mechanism": mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": password if password is not None else self.passwords[user],
        }

    def password_file(self, user: str) -> Path:
        path = self.secret_dir / f"{user}.password"
        path.write_text(self.passwords[user] + "\n")  # a trailing newline, as `echo` writes it
        path.chmod(0o600)
        return path

    def worker_env(self, user: str = "worker") -> dict[str, str]:
        """Environment for ``streams`` commands as ``user``, the password given as a file."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMS_KAFKA_SSL_CAFILE": str(self.ca_file),
            "STREAMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMS_KAFKA_SASL_USERNAME": user,
            "STREAMS_KAFKA_SASL_PASSWORD_FILE": str(self.password_file(user)),
        }

    # -- administration (as the super user) ------------------------------------------------------

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({
                "bootstrap.servers": self.bootstrap, "security.protocol": "SASL_SSL",
                "ssl.ca.location": str(self.ca_file), "sasl.mechanism": "PLAIN",
                "sasl.username": "admin", "sasl.password": self.admin_password,
            })
        return self._admin

    def create_topics(self, partitions: dict[str, int]) -> None:
        futures = self.admin.create_topics([NewTopic(name, count, 1) for name, count in partitions.items()])
        for future in futures.values():
            future.result(30)

    def grant(self, user: str, resource: ResourceType, name: str, operations: Sequence[AclOperation],
              pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> None:
        bindings = [AclBinding(resource, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)
                    for op in operations]
        for future in self.admin.create_acls(bindings).values():
            future.result(30)

    def revoke(self, user: str, resource: ResourceType, name: str, operations: Sequence[AclOperation],
               pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> None:
        filters = [AclBindingFilter(resource, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)
                   for op in operations]
        for future in self.admin.delete_acls(filters).values():
            future.result(30)

    def denials_since(self, offset: int) -> list[str]:
        """Authorizer 'Denied' lines the broker logged after byte ``offset`` of its log."""
        with self.server_log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if "is Denied operation" in line]

    def log_size(self) -> int:
        return self.server_log.stat().st_size


def _free_port_pair(preferred: int) -> int:
    """``preferred`` if it and the next port are free, else another free pair."""
    def free(port: int) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) != 0

    for candidate in (preferred, *range(preferred + 10, preferred + 400, 10)):
        if free(candidate) and free(candidate + 1):
            return candidate
    raise RuntimeError("no two free adjacent ports for the secure broker")


def _script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), command], env={**os.environ, **env}, text=True,
                          capture_output=True, timeout=180)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    if not shutil.which("java"):
        pytest.fail("the secure broker needs Java 17 (same as the plain one)")
    root = tmp_path_factory.mktemp("secure-kafka")
    pki = TestPki.create(root / "pki", "kafka")
    broker = pki.issue("broker", hosts=("127.0.0.1", "localhost"))
    key_password = secrets.token_urlsafe(16)
    client_cert = pki.issue("worker-client", client=True, key_password=key_password)
    shutil.copy(pki.ca_file, root / "ca.pem")
    shutil.copy(broker.bundle, root / "broker.pem")
    (root / "broker.pem").chmod(0o600)
    secret_dir = root / "secrets"
    secret_dir.mkdir(mode=0o700)
    passwords = {user: secrets.token_urlsafe(24) for user in (*USERS, *PLAIN_USERS)}
    admin_password = secrets.token_urlsafe(24)
    port = _free_port_pair(int(os.environ.get("STREAMS_TEST_SECURE_KAFKA_PORT", "19192")))
    env = {
        "KAFKA_SECURE": "1",
        "KAFKA_STATE_DIR": str(root / "state"),
        "KAFKA_SECURE_PORT": str(port),
        "KAFKA_SECURE_CONTROLLER_PORT": str(port + 1),
        "KAFKA_SECURE_CERT_DIR": str(root),
        "KAFKA_SECURE_ADMIN_PASSWORD": admin_password,
        "KAFKA_SECURE_SCRAM_USERS": " ".join(f"{u}={passwords[u]}" for u in USERS),
        "KAFKA_SECURE_PLAIN_USERS": " ".join(f"{u}={passwords[u]}" for u in PLAIN_USERS),
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
    }
    began = time.monotonic()
    started = _script("start", env)
    TIMINGS["secure broker start (s)"] = time.monotonic() - began
    if started.returncode != 0:
        pytest.fail(f"the secure broker did not start:\n{started.stderr[-4000:]}")
    kafka = SecureKafka(f"127.0.0.1:{port}", port, root / "state", pki, admin_password, passwords,
                        client_cert, key_password, secret_dir)
    try:
        yield kafka
    finally:
        began = time.monotonic()
        stopped = _script("stop", env)
        TIMINGS["secure broker stop (s)"] = time.monotonic() - began
        if stopped.returncode != 0:
            print(stopped.stderr[-2000:])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_line(
            "security: " + ", ".join(f"{name} {value:.1f}" for name, value in TIMINGS.items()))
