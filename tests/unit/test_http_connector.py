"""The HTTP core and the customer connector against the real sandbox server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from connectors import CustomerConnector, HttpConnector, HttpSettings, PermanentError, TransientError
from sandbox.customers import customer_for
from sandbox.server import SandboxServer
from tests.local_http import serve


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    async with SandboxServer() as server:
        yield server


async def test_customer_lookup_returns_the_sandbox_customer(sandbox: SandboxServer) -> None:
    async with CustomerConnector(HttpSettings(base_url=sandbox.url)) as customers:
        assert await customers.get("C000042") == customer_for("C000042")


async def test_unknown_customer_is_a_permanent_404(sandbox: SandboxServer) -> None:
    async with CustomerConnector(HttpSettings(base_url=sandbox.url)) as customers:
        with pytest.raises(PermanentError) as caught:
            await customers.get("nobody")
    assert caught.value.status == 404 and caught.value.connector == "customers"


async def test_path_parameters_cannot_change_the_path(sandbox: SandboxServer) -> None:
    http = HttpConnector("customers", HttpSettings(base_url=sandbox.url))
    url = http.url_for("/v1/customers/{id}", id="../../admin?x=1#y")
    assert url.endswith("/v1/customers/..%2F..%2Fadmin%3Fx%3D1%23y")


async def test_a_template_that_leaves_the_host_is_refused(sandbox: SandboxServer) -> None:
    http = HttpConnector("customers", HttpSettings(base_url=sandbox.url))
    with pytest.raises(PermanentError, match="not the allowed host"):
        http.url_for("@evil.example{path}", path="/x")


async def test_a_checked_template_still_keeps_every_parameter_on_the_host(sandbox: SandboxServer) -> None:
    """The host check runs once per "/..." template; hostile parameters after that stay in the path."""
    http = HttpConnector("customers", HttpSettings(base_url=sandbox.url))
    http.url_for("/v1/customers/{id}", id="C1")
    for hostile in ("@evil.example", "//evil.example/x", "\\\\evil.example", "x#@evil.example:80", "%2F%2Fevil"):
        url = http.url_for("/v1/customers/{id}", id=hostile)
        assert http.check_url(url) == url  # what the full check says of each
    with pytest.raises(PermanentError, match="not the allowed host"):  # a template off the host: every call
        http.url_for("@evil.example{path}", path="/x")
    with pytest.raises(PermanentError, match="not the allowed host"):
        http.url_for("@evil.example{path}", path="/x")


async def test_5xx_is_retried_then_raised_as_transient() -> None:
    calls = 0

    async def failing(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503)

    async for url in serve(failing):
        async with HttpConnector("flaky", HttpSettings(base_url=url, max_attempts=3, backoff_base=0.001)) as http:
            with pytest.raises(TransientError) as caught:
                await http.get_json("/x")
    assert calls == 3 and caught.value.status == 503


async def test_oversized_body_is_refused() -> None:
    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"[" + b"1," * 100_000 + b"1]", content_type="application/json")

    async for url in serve(huge):
        async with HttpConnector("big", HttpSettings(base_url=url, max_response_bytes=10_000)) as http:
            with pytest.raises(PermanentError, match="exceeds the 10000-byte cap"):
                await http.get_json("/x")


async def test_malformed_customer_response_is_permanent() -> None:
    async def wrong(_: web.Request) -> web.Response:
        return web.json_response({"customer_id": "C000001", "name": 42})

    async for url in serve(wrong):
        async with CustomerConnector(HttpSettings(base_url=url)) as customers:
            with pytest.raises(PermanentError, match="field 'name'"):
                await customers.get("C000001")


async def test_connection_refused_is_transient() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response()

    async for url in serve(ok):
        dead = url
    async with HttpConnector("down", HttpSettings(base_url=dead, max_attempts=1)) as http:
        with pytest.raises(TransientError, match="connection failed"):
            await http.get_json("/x")
