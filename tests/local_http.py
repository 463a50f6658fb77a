"""A one-handler HTTP server on a free loopback port, for connector tests that need an API answering
exactly so (a status, a body, a content type) rather than the sandbox's own endpoints.

    async for url in serve(handler):     # the server runs for the body of the loop
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` for every method and path; yields the base URL, cleans up after."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
