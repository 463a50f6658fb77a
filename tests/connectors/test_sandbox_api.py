"""The sandbox API itself: its domain endpoints, and fault injection set at start and changed at runtime."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import Counter

import aiohttp

from connectors import CatalogConnector, HttpSettings
from sandbox.server import SandboxConfig, SandboxServer
from tests.connectors.conftest import SandboxFactory, get, wait_for


async def test_faults_change_at_runtime_through_the_admin_endpoint(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    fx = f"{api.url}/v1/fx-rates/EUR"
    assert (await get(session, fx))[0] == 200
    async with session.put(f"{api.url}/admin/faults/fx", json={"errors": {"503": 1.0}, "retry_after": 2}) as put:
        assert put.status == 200
    async with session.get(fx) as response:
        assert response.status == 503 and response.headers["Retry-After"] == "2"
    assert await get(session, f"{api.url}/admin/faults") == (200, {"fx": {"errors": {"503": 1.0}, "retry_after": 2}})
    async with session.delete(f"{api.url}/admin/faults/fx") as deleted:
        assert deleted.status == 204
    assert (await get(session, fx))[0] == 200
    status, stats = await get(session, f"{api.url}/admin/stats")
    assert status == 200 and stats["requests"]["fx"] == 3


async def test_a_bad_fault_spec_is_refused_with_the_reason(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    async with session.put(f"{api.url}/admin/faults/fx", json={"errors": {"503": 2}}) as response:
        assert response.status == 400 and "probability" in (await response.json())["error"]
    async with session.put(f"{api.url}/admin/faults/nowhere", json={}) as response:
        assert response.status == 404


async def test_faults_set_at_start_apply_from_the_first_request(
    start_sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    async with start_sandbox(SandboxConfig(faults={"products": {"errors": {"500": 1.0}}})) as api:
        assert (await get(session, f"{api.url}/v1/products"))[0] == 500


async def test_an_outage_window_ends_by_itself(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    spec = {"outages": [{"start_s": 0, "duration_s": 0.3, "status": 503}]}
    async with session.put(f"{api.url}/admin/faults/customers", json=spec):
        began = time.monotonic()
    assert (await get(session, f"{api.url}/v1/customers/C000001"))[0] == 503

    async def back() -> bool:
        return (await get(session, f"{api.url}/v1/customers/C000001"))[0] == 200

    await wait_for(back, deadline=2, what="the outage to end")
    assert time.monotonic() - began >= 0.3


async def test_latency_follows_the_configured_distribution(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    spec = {"latency": {"distribution": "uniform", "min_ms": 40, "max_ms": 80}}
    async with session.put(f"{api.url}/admin/faults/fx", json=spec):
        pass

    async def timed() -> float:
        began = time.monotonic()
        await get(session, f"{api.url}/v1/fx-rates/EUR")
        return time.monotonic() - began

    took = await asyncio.gather(*(timed() for _ in range(20)))
    assert all(0.04 <= t < 0.2 for t in took), took
    assert max(took) - min(took) > 0.01, "spread, not fixed"


async def test_error_rates_by_status_are_drawn_per_request(
    start_sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    faults = {"fx": {"errors": {"500": 0.2, "503": 0.3}}}
    async with start_sandbox(SandboxConfig(seed=3, faults=faults)) as api:
        statuses = Counter([(await get(session, f"{api.url}/v1/fx-rates/EUR"))[0] for _ in range(400)])
    assert 50 <= statuses[500] <= 110 and 85 <= statuses[503] <= 155 and statuses[200] >= 160, statuses


async def test_the_risk_api_answers_429_with_retry_after_beyond_its_rate(
    start_sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    async with start_sandbox(SandboxConfig(risk_rate=2, risk_burst=2)) as api:
        body = {"customer_id": "C000001", "amount_cents": 100, "currency": "EUR"}
        statuses = []
        for _ in range(3):
            async with session.post(f"{api.url}/v1/risk-scores", json=body) as response:
                statuses.append(response.status)
                retry_after = response.headers.get("Retry-After")
    assert statuses == [200, 200, 429] and retry_after == "1"


async def test_the_risk_api_replays_an_idempotent_request(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    body = {"customer_id": "C000001", "amount_cents": 100, "currency": "EUR"}
    answers = []
    for _ in range(2):
        async with session.post(f"{api.url}/v1/risk-scores", json=body, headers={"Idempotency-Key": "e-1"}) as r:
            answers.append((await r.json(), r.headers.get("Idempotent-Replayed")))
    assert answers[0][0] == answers[1][0] and answers[1][1] == "true"
    assert api.stats.idempotent_replays == 1


async def test_the_catalog_pages_by_cursor_and_link_header_through_every_product(start_sandbox: SandboxFactory) -> None:
    async with (
        start_sandbox(SandboxConfig(catalog_size=250)) as api,
        CatalogConnector(HttpSettings(base_url=api.url)) as catalog,
    ):
        pages = [page async for page in catalog.pages(limit=100)]
    assert [len(p.items) for p in pages] == [100, 100, 50]
    ids = [item["product_id"] for p in pages for item in p.items]
    assert ids == [f"P{n:06d}" for n in range(1, 251)]
    assert pages[-1].next_cursor is None


async def test_a_bad_cursor_is_a_400(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    assert (await get(session, f"{api.url}/v1/products?cursor=not-ours"))[0] == 400


async def test_python_m_sandbox_serves_with_faults_from_the_command_line(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    faults = json.dumps({"fx": {"errors": {"418": 1.0}}})
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port), "--faults", faults, "--oauth-client", "a:b"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async def up() -> bool:
            try:
                return (await get(session, f"http://127.0.0.1:{port}/healthz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await wait_for(up, deadline=15, what="python -m sandbox to listen")
        assert (await get(session, f"http://127.0.0.1:{port}/v1/fx-rates/EUR"))[0] == 418
        assert (await get(session, f"http://127.0.0.1:{port}/v1/customers/C000001"))[0] == 401
    finally:
        process.terminate()
        process.wait(10)
