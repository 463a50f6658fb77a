"""The telemetry server over loopback: /metrics, /healthz, /readyz, and the readiness helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streams.telemetry import (
    METRICS_KEY,
    LoopLagMonitor,
    PipelineMetrics,
    Readiness,
    TelemetryServer,
    metrics_handler,
)
from streams.telemetry.testing import sample_key, scrape


@pytest.fixture
def metrics() -> Iterator[PipelineMetrics]:
    m = PipelineMetrics("orders-enricher")
    yield m
    m.close()


class Probe:
    """A readiness probe the test flips."""

    def __init__(self) -> None:
        self.ok = False
        self.reasons: dict[str, Any] = {"partitions_assigned": {"ok": False, "detail": "0 partitions"}}

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        return self.ok, self.reasons


@pytest.fixture
async def served(metrics: PipelineMetrics) -> AsyncIterator[tuple[TelemetryServer, Probe]]:
    probe = Probe()
    async with TelemetryServer("127.0.0.1", 0, probe, metrics=metrics) as server:
        yield server, probe


async def get(url: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body, response.headers.get("Content-Type", "")


async def test_port_zero_binds_a_free_port_and_tells_which(served: tuple[TelemetryServer, Probe]) -> None:
    server, _ = served
    assert server.port and server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_metrics_show_exactly_what_was_recorded(
    served: tuple[TelemetryServer, Probe], metrics: PipelineMetrics
) -> None:
    server, _ = served
    for _ in range(7):
        metrics.event_in("orders")
    metrics.event_dead_lettered("poison")
    metrics.connector_call("customers", 200, 0.05)

    values = await scrape(f"{server.url}/metrics")

    assert values[sample_key("streams_events_in_total", pipeline="orders-enricher", topic="orders")] == 7
    assert values[sample_key("streams_events_dead_lettered_total", pipeline="orders-enricher", reason="poison")] == 1
    count = sample_key(
        "streams_connector_call_duration_seconds_count", pipeline="orders-enricher", connector="customers", status="200"
    )
    assert values[count] == 1


async def test_metrics_are_served_as_prometheus_text(served: tuple[TelemetryServer, Probe]) -> None:
    server, _ = served
    status, _, content_type = await get(f"{server.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain")


async def test_healthz_answers_200(served: tuple[TelemetryServer, Probe]) -> None:
    server, _ = served
    status, body, _ = await get(f"{server.url}/healthz")
    assert (status, body) == (200, {"alive": True})


async def test_readyz_is_503_with_the_reasons_until_the_probe_says_ready(
    served: tuple[TelemetryServer, Probe],
) -> None:
    server, probe = served
    status, body, _ = await get(f"{server.url}/readyz")
    assert status == 503
    assert body == {"ready": False, "reasons": {"partitions_assigned": {"ok": False, "detail": "0 partitions"}}}

    probe.ok, probe.reasons = True, {"partitions_assigned": {"ok": True, "detail": "4 partitions"}}
    status, body, _ = await get(f"{server.url}/readyz")
    assert status == 200 and body["ready"] is True


async def test_a_probe_that_raises_means_not_ready_with_a_redacted_reason() -> None:
    def probe() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("broker said password=probe-pw")

    async with TelemetryServer(readiness_probe=probe) as server:
        status, body, _ = await get(f"{server.url}/readyz")

    assert status == 503 and "RuntimeError" in str(body) and "probe-pw" not in str(body)


async def test_without_a_probe_or_metrics_the_server_is_ready_and_has_no_metrics() -> None:
    async with TelemetryServer() as server:
        assert (await get(f"{server.url}/readyz"))[0] == 200
        assert (await get(f"{server.url}/metrics"))[0] == 404


async def test_metrics_handler_mounts_in_another_aiohttp_app(metrics: PipelineMetrics) -> None:
    metrics.event_out("orders.enriched", count=2)
    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        values = await scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        await runner.cleanup()
    assert values[sample_key("streams_events_out_total", pipeline="orders-enricher", topic="orders.enriched")] == 2


async def test_readyz_with_readiness_checks_end_to_end() -> None:
    assigned = [0]

    async def broker_reachable() -> tuple[bool, str]:
        await asyncio.sleep(0)
        return True, "metadata in 3 ms"

    readiness = Readiness()
    readiness.add("partitions_assigned", lambda: (assigned[0] > 0, f"{assigned[0]} partitions"))
    readiness.add("broker_reachable", broker_reachable)
    async with TelemetryServer(readiness_probe=readiness) as server:
        status, body, _ = await get(f"{server.url}/readyz")
        assert status == 503
        assert body["reasons"] == {
            "partitions_assigned": {"ok": False, "detail": "0 partitions"},
            "broker_reachable": {"ok": True, "detail": "metadata in 3 ms"},
        }
        assigned[0] = 4
        assert (await get(f"{server.url}/readyz"))[0] == 200


# -- readiness helpers ----------------------------------------------------------------------------------


async def test_a_check_that_hangs_or_raises_fails_with_why() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(10)
        return True

    def raises() -> bool:
        raise ConnectionError("refused, api_key=check-key")

    readiness = Readiness(timeout=0.05)
    readiness.add("hangs", hangs)
    readiness.add("raises", raises)
    readiness.add("fine", lambda: True)

    ok, reasons = await readiness()

    assert not ok
    assert reasons["hangs"] == {"ok": False, "detail": "no answer within 0.05 s"}
    assert reasons["raises"]["ok"] is False and "check-key" not in reasons["raises"]["detail"]
    assert reasons["fine"] == {"ok": True}


async def test_the_loop_lag_monitor_sees_a_blocked_loop() -> None:
    monitor = LoopLagMonitor(interval=0.01)
    monitor.start()
    try:
        await asyncio.sleep(0.03)
        assert monitor.check(max_lag=0.1)()[0]
        time.sleep(0.15)  # blocks the event loop on purpose: this is what the monitor measures
        await asyncio.sleep(0.02)
        ok, detail = monitor.check(max_lag=0.1)()
    finally:
        await monitor.stop()
    assert not ok and detail["lag_seconds"] >= 0.1
