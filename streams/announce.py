"""Workers announce their state to the compacted topic ``<pipeline>.workers``, for the console.

    announcer = Announcer(settings, state=WorkerState(engine, apis, runtime="aiokafka"))
    await announcer.start()     # one record now, then one every STREAMS_ANNOUNCE_INTERVAL seconds
    ...
    await announcer.stop()      # a last record, state "stopped"

One JSON record per announcement, keyed by the worker's id (host, pid and a random suffix,
so a restarted worker is a new one): its host, assigned partitions, events in flight, each
API's breaker state (and since when) and limiter rate and waits, the partitions it paused and
why, the retry records it holds with their next due time, its event counts and its version,
and what announcing has cost it so far (records, bytes, CPU seconds taking and encoding them).
The topic is compacted (the console needs each worker's last record only) and its records are
deleted after a day, so the ids of workers long gone do not pile up. No service discovery:
any console that can read the topic sees every worker, wherever it runs; one that stops
announcing is shown as gone once its last record is older than the console's timeout.

Announcing never holds up the worker: a send that fails is logged (once a minute at most) and
the next announcement tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Hashable, Sequence
from importlib import metadata
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.api import Api
from streams.engine.engine import Engine
from streams.names import workers_topic
from streams.security import kafka_security
from streams.settings import Settings

log = logging.getLogger("streams.announce")

WORKERS_TOPIC_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(24 * 3600 * 1000)}
_SEND_TIMEOUT = 5.0
_WARN_EVERY = 60.0


def worker_id() -> str:
    """This process's id on the workers topic: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def streams_version() -> str:
    try:
        return metadata.version("streams")
    except metadata.PackageNotFoundError:
        return "unknown"


def _tp(partition: Hashable) -> tuple[str, int]:
    """(topic, partition) of an aiokafka or Faust TopicPartition."""
    return str(getattr(partition, "topic", "?")), int(getattr(partition, "partition", -1))


class WorkerState:
    """What a worker announces, read from its engine and its pipeline's APIs when asked."""

    def __init__(self, engine: Engine[Any], apis: Sequence[Api], *, pipeline: str, runtime: str,
                 interval: float) -> None:
        self.engine = engine
        self.apis = list(apis)
        self.pipeline = pipeline
        self.runtime = runtime
        self.interval = interval
        self.id = worker_id()
        self.host = socket.gethostname()
        self.version = streams_version()
        self.started_at_ms = int(time.time() * 1000)
        self._breaker_since: dict[str, int] = {}  # API -> epoch ms of its breaker's last transition
        for api in self.apis:
            connector = api.connector
            if connector is not None and connector.breaker is not None:
                connector.breaker.add_listener(self._on_transition(api.name))

    def _on_transition(self, name: str) -> Callable[[Any], None]:
        def noted(_transition: Any) -> None:
            self._breaker_since[name] = int(time.time() * 1000)
        return noted

    def snapshot(self, *, stopped: bool = False) -> dict[str, Any]:
        engine = self.engine
        now = time.time()
        stats = engine.processor.stats
        paused_since = engine.breaker_paused_since
        apis: dict[str, Any] = {}
        for api in self.apis:
            connector = api.connector
            entry: dict[str, Any] = {}
            if connector is not None and connector.breaker is not None:
                entry["breaker"] = connector.breaker.state.value
                entry["breaker_since_ms"] = self._breaker_since.get(api.name, self.started_at_ms)
                entry["rejected_calls"] = connector.breaker.rejected_calls
            if connector is not None and connector.limiter is not None:
                limiter = connector.limiter
                entry["limiter"] = {"rate": round(limiter.rate, 3), "ceiling": round(limiter.ceiling, 3),
                                    "acquired": limiter.acquired, "wait_seconds": round(limiter.wait_seconds_total, 3)}
            apis[api.name] = entry
        return {
            "id": self.id, "host": self.host, "pid": os.getpid(), "pipeline": self.pipeline,
            "runtime": self.runtime, "version": self.version, "state": "stopped" if stopped else "running",
            "at_ms": int(now * 1000), "started_at_ms": self.started_at_ms, "interval_s": self.interval,
            "partitions": sorted(_tp(tp) for tp in engine.assigned()),
            "in_flight": engine.in_flight,
            "apis": apis,
            "paused_for_circuit_since_ms": None if paused_since is None else
            int((now - (asyncio.get_running_loop().time() - paused_since)) * 1000),
            "paused": sorted([*_tp(tp), why] for tp, why in engine.paused_partitions().items()),
            "retry_held": sorted([*_tp(tp), count, int(due * 1000)]
                                 for tp, (count, due) in engine.held_partitions().items()),
            "events": {"in": stats.processed, "out": stats.enriched, "retried": stats.retried,
                       "dead_lettered": stats.dead_lettered, "filtered": stats.filtered},
        }


class Announcer:
    """Sends a ``WorkerState`` snapshot every ``interval`` seconds, and a last one on ``stop``."""

    def __init__(self, settings: Settings, state: WorkerState) -> None:
        self._settings = settings
        self._state = state
        self._topic = workers_topic(state.pipeline)
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned = float("-inf")
        self.sent = 0
        self.bytes_sent = 0
        self.cpu_seconds = 0.0  # spent taking and encoding snapshots (the sends run in the producer)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._settings.kafka_bootstrap_servers, acks=1,
                                          linger_ms=0, **kafka_security(self._settings))
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="announcer")

    async def stop(self) -> None:
        """Stop announcing; the last record says the worker stopped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._producer is not None:
            try:
                await self._announce(stopped=True)
            finally:
                await self._producer.stop()
                self._producer = None

    async def _run(self) -> None:
        while True:
            await self._announce()
            await asyncio.sleep(self._state.interval)

    async def _announce(self, *, stopped: bool = False) -> None:
        assert self._producer is not None
        began = time.thread_time()
        snapshot = self._state.snapshot(stopped=stopped)
        snapshot["announcer"] = {"sent": self.sent, "bytes": self.bytes_sent, "cpu_s": round(self.cpu_seconds, 6)}
        value = json.dumps(snapshot, separators=(",", ":")).encode()
        self.cpu_seconds += time.thread_time() - began
        try:
            await asyncio.wait_for(self._producer.send_and_wait(self._topic, value, key=self._state.id.encode()),
                                   _SEND_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - announcing is best effort; the next one tries again
            if time.monotonic() - self._warned >= _WARN_EVERY:
                self._warned = time.monotonic()
                log.warning("announcing this worker's state to %s failed: %s: %s (retried every %.0f s)",
                            self._topic, type(exc).__name__, exc, self._state.interval)
            return
        self.sent += 1
        self.bytes_sent += len(value)
