"""A Schema Registry for a test session: ``SCHEMA_REGISTRY_URL`` if set, else the project's Apicurio.

    with registry_for_tests() as url:     # http://127.0.0.1:8081/apis/ccompat/v7
        ...

Apicurio is started with ``scripts/apicurio.sh`` at most once per session however many
fixtures ask for it (they share a count), and stopped after the last one only if this
session started it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "apicurio.sh"

_lock = threading.Lock()
_users = 0
_url: str | None = None
_started_here = False


def _script(command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), command], check=check, text=True, stdout=subprocess.PIPE,
                          timeout=600)


@contextmanager
def registry_for_tests() -> Iterator[str]:
    """The base URL of a Confluent-compatible registry (Apicurio's ``/apis/ccompat/v7``)."""
    global _users, _url, _started_here
    configured = os.environ.get("SCHEMA_REGISTRY_URL")
    if configured:
        yield configured.rstrip("/")
        return
    with _lock:
        if _users == 0:
            already_running = _script("status", check=False).returncode == 0
            _url = _script("start").stdout.strip().splitlines()[-1]
            _started_here = not already_running
        _users += 1
        url = _url
    assert url is not None
    try:
        yield url
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _started_here:
                _script("stop", check=False)
                _started_here = False
