"""Metadata refreshes that back off while the brokers cannot be reached.

    from streams.kafka.metadata_backoff import install
    install()        # once per process (streams.kafka does it on import)

aiokafka's producer sender (``producer/sender.py``, ``_sender_routine``, 0.14.0) asks for a
metadata refresh whenever a pending batch's partition has no leader, and waits for it with no
backoff. During a controlled broker shutdown every leader is -1 and every connection is refused,
so each refresh fails at once and the loop spins: a worker used 14 s of CPU and wrote 236,000
log lines in a 20 s outage (docs/broker-outages.md has the reproduction, with a bare
``AIOKafkaProducer``). The fetcher and the group coordinator call the same refresh.

``AIOKafkaClient.force_metadata_update`` is where every one of them asks, so that is where the
backoff goes: after a refresh that failed, the next one starts no sooner than a delay that
doubles from ``FIRST_BACKOFF`` up to ``MAX_BACKOFF`` seconds, and callers in between share
one delayed refresh; the first success resets it. A refresh while the cluster is healthy is not
delayed at all. The one seam is that public method, wrapped once per process;
``tests/unit/test_metadata_backoff.py`` checks the wrapper against aiokafka's client, so a
release that changes it fails the suite.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka.client import AIOKafkaClient

FIRST_BACKOFF = 0.1  # seconds after the first failed refresh (aiokafka's default retry_backoff_ms)
MAX_BACKOFF = 2.0  # seconds between two refreshes that fail, at most

_original: Callable[[AIOKafkaClient], Awaitable[bool]] | None = None


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    not_before: float = 0.0  # monotonic seconds
    delayed: asyncio.Future[bool] | None = None  # the one refresh callers wait for meanwhile


_state: weakref.WeakKeyDictionary[AIOKafkaClient, _Backoff] = weakref.WeakKeyDictionary()


def _refresh(client: AIOKafkaClient, backoff: _Backoff) -> Awaitable[bool]:
    assert _original is not None
    refresh = _original(client)

    async def recorded() -> bool:
        ok = False
        try:
            ok = bool(await refresh)
            return ok
        finally:
            if ok:
                backoff.failures, backoff.not_before = 0, 0.0
            else:
                backoff.failures += 1
                backoff.not_before = time.monotonic() + min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (backoff.failures - 1))

    return asyncio.ensure_future(recorded())


def force_metadata_update(self: AIOKafkaClient) -> Awaitable[bool]:
    """aiokafka's refresh, started no sooner than the backoff after a failed one."""
    backoff = _state.get(self)
    if backoff is None:
        backoff = _state[self] = _Backoff()
    wait = backoff.not_before - time.monotonic()
    if wait <= 0:
        return _refresh(self, backoff)
    if backoff.delayed is None or backoff.delayed.done():
        async def later() -> bool:
            await asyncio.sleep(wait)
            return await _refresh(self, backoff)

        backoff.delayed = asyncio.ensure_future(later())
    return asyncio.shield(backoff.delayed)


def install() -> None:
    """Wrap ``AIOKafkaClient.force_metadata_update`` (every aiokafka client of this process)."""
    global _original
    if _original is None:
        _original = AIOKafkaClient.force_metadata_update
        AIOKafkaClient.force_metadata_update = force_metadata_update


def installed() -> bool:
    return _original is not None
