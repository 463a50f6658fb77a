"""Pausing consumption while a required API's circuit is open, and resuming when it closes.

    pauses = BreakerPauses(port, held=lambda: gate.paused_partitions)
    await pauses.wait(blocked)      # the first event to meet an open breaker pauses; the rest wait too

Routing such events to a retry tier would only flood the tiers with events that cannot succeed
yet; waiting in their lanes keeps their keys' order. One wait per breaker: its own probes close
it, then the partitions this pause paused (not those a retry tier holds) resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Hashable
from typing import Any, Protocol

log = logging.getLogger("streams.engine")


class _Port(Protocol):
    def assigned(self) -> list[Hashable]: ...

    def pause(self, partition: Hashable) -> None: ...

    def resume(self, partition: Hashable) -> None: ...


class _Blocked(Protocol):
    breaker: Any  # has ``async wait_until_closed()``
    connector: str


class BreakerPauses:
    def __init__(self, port: _Port, held: Callable[[], Collection[Hashable]]) -> None:
        self._port = port
        self._held = held
        self._waits: dict[object, asyncio.Future[None]] = {}
        self.paused_since: float | None = None  # loop time consumption paused for a breaker
        self.paused: dict[Hashable, str] = {}  # partition -> the connector whose open circuit paused it

    async def wait(self, blocked: _Blocked) -> None:
        """Pause consumption until ``blocked.breaker`` closes (once per breaker), then resume."""
        waiting = self._waits.get(blocked.breaker)
        if waiting is None:
            waiting = self._waits[blocked.breaker] = asyncio.ensure_future(self._pause_until_closed(blocked))
        await asyncio.shield(waiting)

    async def _pause_until_closed(self, blocked: _Blocked) -> None:
        held = set(self._held())
        paused = [tp for tp in self._port.assigned() if tp not in held]
        for tp in paused:
            self._port.pause(tp)
            self.paused[tp] = blocked.connector
        loop = asyncio.get_running_loop()
        self.paused_since = since = loop.time()
        log.warning("circuit of connector %s is open: paused %d partitions until it closes",
                    blocked.connector, len(paused))
        try:
            await blocked.breaker.wait_until_closed()
            for tp in paused:
                self._port.resume(tp)
            log.info("circuit of connector %s closed after %.1f s: resumed %d partitions",
                     blocked.connector, loop.time() - since, len(paused))
        finally:
            self.paused_since = None
            for tp in paused:
                if self.paused.get(tp) == blocked.connector:
                    del self.paused[tp]
            del self._waits[blocked.breaker]
