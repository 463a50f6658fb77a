"""What a connector call returns: the value, where it came from, and whether it is degraded.

    result = await fx.rates("EUR")
    record["fx"] = result.value
    record["degraded"] = result.degraded      # stale cache or fallback stood in for the API

A required connector raises when the API fails; an optional one falls back and says so here,
so the engine can mark the output record as degraded instead of failing the event.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

from connectors.errors import TransientError

T = TypeVar("T")


class Source(enum.StrEnum):
    """Where a value came from."""

    LIVE = "live"  # the API answered this call (or a concurrent identical one)
    CACHE = "cache"  # a fresh cached answer
    STALE = "stale"  # an expired cached answer, standing in while the API fails
    FALLBACK = "fallback"  # the configured default, standing in while the API fails


@dataclass(frozen=True, slots=True)
class ConnectorResult(Generic[T]):
    """A value and its provenance.

    ``reason`` says why a stand-in was used (the error's class and message, which never
    carry secrets); it is None for live and fresh cached values.
    """

    value: T
    source: Source = Source.LIVE
    connector: str = ""
    reason: str | None = None

    @property
    def degraded(self) -> bool:
        """True when the value is a stand-in (stale or fallback), not a current answer."""
        return self.source in (Source.STALE, Source.FALLBACK)


def reason_of(exc: BaseException) -> str:
    """A short, secret-free description of why a stand-in was used."""
    return f"{type(exc).__name__}: {exc}"[:200]


async def with_fallback(call: Awaitable[ConnectorResult[T]], fallback: T | None, connector: str) -> ConnectorResult[T]:
    """Await ``call``; when it fails transiently and a fallback is configured, return the fallback.

    Permanent failures still raise: the request itself is wrong, a default would hide that.
    """
    try:
        return await call
    except TransientError as exc:
        if fallback is None:
            raise
        return ConnectorResult(fallback, Source.FALLBACK, connector, reason_of(exc))
