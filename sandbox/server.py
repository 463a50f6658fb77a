"""The sandbox API: an aiohttp server standing in for the external APIs the pipelines call.

    async with SandboxServer() as sandbox:
        print(sandbox.url)          # http://127.0.0.1:<free port>

Run alone with ``python -m sandbox --port 8080``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from sandbox.customers import customer_for


@dataclass
class SandboxStats:
    """What the sandbox has served, for tests to check against."""

    customer_requests: int = 0
    traceparents: deque[str] = field(default_factory=lambda: deque(maxlen=10_000))


STATS = web.AppKey("stats", SandboxStats)


def build_app(stats: SandboxStats | None = None, latency_ms: float = 0.0) -> web.Application:
    app = web.Application()
    app[STATS] = stats if stats is not None else SandboxStats()
    latency = latency_ms / 1000.0

    async def get_customer(request: web.Request) -> web.Response:
        app[STATS].customer_requests += 1
        if "traceparent" in request.headers:
            app[STATS].traceparents.append(request.headers["traceparent"])
        if latency:
            await asyncio.sleep(latency)
        customer = customer_for(request.match_info["customer_id"])
        if customer is None:
            return web.json_response({"error": "customer not found"}, status=404)
        return web.json_response(customer)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/v1/customers/{customer_id}", get_customer)
    app.router.add_get("/healthz", health)
    return app


class SandboxServer:
    """Runs the sandbox on loopback; port 0 picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0.0) -> None:
        self.host = host
        self.port = port
        self.stats = SandboxStats()
        self._app = build_app(self.stats, latency_ms)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
