"""The worker's telemetry endpoints: ``/metrics``, ``/healthz`` and ``/readyz``, on aiohttp.

    lag = LoopLagMonitor(); lag.start()
    readiness = Readiness()
    readiness.add("partitions_assigned", lambda: bool(app.consumer.assignment()))
    readiness.add("broker_reachable", check_broker)                 # may be async
    readiness.add("event_loop", lag.check(max_lag=1.0))
    async with TelemetryServer("0.0.0.0", 9464, readiness, metrics=metrics) as server:
        ...                                                         # server.port is the bound port

``/healthz`` answers 200 while the process serves HTTP at all. ``/readyz`` answers 200 or 503
with ``{"ready": bool, "reasons": {...}}`` from the readiness probe, any ``() -> (ok, reasons)``
function, sync or async (``Readiness`` builds one from named checks). ``/metrics`` serves the
Prometheus text of a ``PipelineMetrics``; ``metrics_handler`` does the same inside another
aiohttp app.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from streams.telemetry.metrics import PROMETHEUS_CONTENT_TYPE, PipelineMetrics
from streams.telemetry.redaction import redact, redact_value

__all__ = [
    "METRICS_KEY",
    "LoopLagMonitor",
    "Readiness",
    "ReadinessProbe",
    "TelemetryServer",
    "metrics_handler",
]

log = logging.getLogger("streams.telemetry")

ProbeResult = tuple[bool, Mapping[str, Any]]
ReadinessProbe = Callable[[], ProbeResult | Awaitable[ProbeResult]]
CheckResult = bool | tuple[bool, Any]
Check = Callable[[], CheckResult | Awaitable[CheckResult]]
DetailedCheck = Callable[[], tuple[bool, Any]]

METRICS_KEY: web.AppKey[PipelineMetrics] = web.AppKey("streams.metrics", PipelineMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics`` for an aiohttp app whose ``app[METRICS_KEY]`` is a ``PipelineMetrics``."""
    metrics = request.app[METRICS_KEY]
    return web.Response(body=metrics.render(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class Readiness:
    """A readiness probe made of named checks; ready when every check passes.

    A check returns ``bool`` or ``(bool, detail)``, sync or async. One that raises or takes
    longer than ``timeout`` seconds fails, with the reason in its detail (redacted).
    """

    def __init__(self, timeout: float = 2.0) -> None:
        self._checks: dict[str, Check] = {}
        self._timeout = timeout

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def __call__(self) -> ProbeResult:
        results = await asyncio.gather(*(self._run(check) for check in self._checks.values()))
        reasons = dict(zip(self._checks, results, strict=True))
        return all(result["ok"] for result in results), reasons

    async def _run(self, check: Check) -> dict[str, Any]:
        try:
            result = await asyncio.wait_for(_maybe_await(check()), self._timeout)
        except TimeoutError:
            return {"ok": False, "detail": f"no answer within {self._timeout:g} s"}
        except Exception as exc:  # noqa: BLE001 - a failing check means not ready, with why
            return {"ok": False, "detail": redact(f"{type(exc).__name__}: {exc}")}
        if isinstance(result, tuple):
            ok, detail = result
            return {"ok": bool(ok), "detail": redact_value(detail)}
        return {"ok": bool(result)}


class LoopLagMonitor:
    """Measures how late the event loop runs a timer: a ticker task sleeps ``interval`` seconds
    and records by how much it overslept. ``lag`` is the largest delay of the last ``window``
    ticks, so one stall stays visible for a while."""

    def __init__(self, interval: float = 0.25, window: int = 20) -> None:
        self._interval = interval
        self._window = window
        self._recent: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self.last_tick: float | None = None

    @property
    def lag(self) -> float:
        """Seconds; includes the delay of a tick that is overdue right now."""
        recent = max(self._recent, default=0.0)
        if self.last_tick is not None:
            recent = max(recent, time.monotonic() - self.last_tick - self._interval)
        return max(0.0, recent)

    def start(self) -> None:
        if self._task is None:
            self.last_tick = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._tick(), name="loop-lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tick(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            self._recent.append(max(0.0, now - started - self._interval))
            del self._recent[: -self._window]
            self.last_tick = now

    def check(self, max_lag: float) -> DetailedCheck:
        """A readiness check: the loop is responsive when its lag is at most ``max_lag`` seconds."""

        def check() -> tuple[bool, Any]:
            lag = self.lag
            return lag <= max_lag, {"lag_seconds": round(lag, 3), "max_seconds": max_lag}

        return check


class TelemetryServer:
    """A small aiohttp server for ``/metrics``, ``/healthz`` and ``/readyz``.

    host, port: where to listen; port 0 picks a free port, ``port`` tells which after ``start``.
    readiness_probe: ``() -> (ok, reasons)``, sync or async; None means always ready.
    metrics: the ``PipelineMetrics`` to serve; None serves no ``/metrics``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        readiness_probe: ReadinessProbe | None = None,
        *,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._probe = readiness_probe
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the telemetry server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self._metrics is not None:
            app[METRICS_KEY] = self._metrics
            app.router.add_get("/metrics", metrics_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])  # the bound port, also when 0 was asked for
        log.info("telemetry server on %s (/metrics, /healthz, /readyz)", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TelemetryServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._probe is None:
            ok, reasons = True, {}
        else:
            try:
                ok, reasons = await _maybe_await(self._probe())
            except Exception as exc:  # a failing probe means not ready, with why
                log.warning("readiness probe failed: %s", exc, exc_info=True)
                ok, reasons = False, {"probe": {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}}
        body = {"ready": bool(ok), "reasons": redact_value(reasons)}
        return web.json_response(body, status=200 if ok else 503, dumps=lambda obj: json.dumps(obj, default=str))
