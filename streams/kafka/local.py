"""The project's local Apache Kafka broker, for machines without Docker.

The script and its Maven pom ship in the package (``streams/kafka/broker/``), so an installed
``streams`` finds them too; ``scripts/kafka.sh`` in a checkout is a wrapper around the same script.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "broker" / "kafka.sh"


def kafka_script(command: str, port: int | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``kafka.sh <command>`` (the packaged script); its log goes to this process's stderr."""
    env = dict(os.environ)
    if port is not None:
        env["KAFKA_PORT"] = str(port)
    return subprocess.run(["bash", str(SCRIPT), command], env=env, check=check, text=True, stdout=subprocess.PIPE)


def start_local_broker(port: int | None = None) -> str:
    """Start the local broker if it is not running; return its bootstrap address."""
    kafka_script("start", port)
    return kafka_script("bootstrap", port).stdout.strip()


def local_broker_running(port: int | None = None) -> bool:
    return kafka_script("status", port, check=False).returncode == 0


def stop_local_broker(port: int | None = None) -> None:
    kafka_script("stop", port)
