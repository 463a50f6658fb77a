"""Connector tests run against the real sandbox server on loopback: no HTTP is mocked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from sandbox.server import SandboxConfig, SandboxServer


class FakeClock:
    """Monotonic seconds that move only when told to: for TTLs and token expiry, not for I/O."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


SandboxFactory = Callable[..., AbstractAsyncContextManager[SandboxServer]]


@pytest.fixture
def start_sandbox() -> SandboxFactory:
    """``async with start_sandbox(config=SandboxConfig(...)) as api:`` runs a sandbox for one test."""

    @asynccontextmanager
    async def start(config: SandboxConfig | None = None, **kwargs: object) -> AsyncIterator[SandboxServer]:
        async with SandboxServer(config=config, **kwargs) as server:  # type: ignore[arg-type]
            yield server

    return start


@pytest.fixture
async def api(start_sandbox: SandboxFactory) -> AsyncIterator[SandboxServer]:
    """A sandbox with the default configuration (customers open, generous risk limit)."""
    async with start_sandbox() as server:
        yield server


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], deadline: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > give_up:
            raise AssertionError(f"not true after {deadline} s: {what or condition}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client, for talking to the sandbox as a test (not a connector) would."""
    async with aiohttp.ClientSession() as client:
        yield client


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """GET ``url``: the status and the JSON body."""
    async with session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def post(session: aiohttp.ClientSession, url: str, body: Any,
               headers: dict[str, str] | None = None) -> tuple[int, Any, str | None]:
    """POST a JSON body: the status, the JSON answer and the ``Idempotent-Replayed`` header."""
    async with session.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None), response.headers.get("Idempotent-Replayed")
