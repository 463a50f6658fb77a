"""Response cache: TTL + LRU with a size cap, Cache-Control aware, single-flight, stale-if-error.

    cache = ResponseCache[str, Rates]("fx", CacheSettings(max_entries=1000))
    result = await cache.get_or_load("EUR", load_eur)   # load returns (value, Freshness)

A fresh entry is served without a call. Concurrent misses for one key share a single load
(single flight), so a hundred identical lookups make one upstream request. When the load fails
transiently (including ``CircuitOpenError`` while the breaker is open) an expired entry still
within its stale window stands in, marked ``Source.STALE``.

Written by hand: the single flight and the stale-if-error rule depend on the connector's error
types, which generic caches (cachetools, aiocache) do not know.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from connectors.errors import TransientError
from connectors.results import ConnectorResult, Source, reason_of

K = TypeVar("K", bound=Hashable)
Lookup = Literal["hit", "miss", "stale"]  # what a lookup found, as lookup observers are told
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How long answers are kept.

    max_entries: LRU cap; the least recently used entry goes first.
    default_ttl: seconds an answer is fresh when the response says nothing (no max-age).
    max_ttl: an upper bound on any max-age the API sends.
    stale_if_error: seconds past expiry an answer may still stand in when the API fails;
        a ``stale-if-error=N`` directive in the response overrides it.
    """

    max_entries: int = 10_000
    default_ttl: float = 60.0
    max_ttl: float = 3600.0
    stale_if_error: float = 600.0

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError("max_entries must be at least 1")


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a response may be served: ``ttl`` None means do not store it at all."""

    ttl: float | None
    stale_if_error: float | None = None


def freshness_of(headers: Mapping[str, str], settings: CacheSettings) -> Freshness:
    """Read ``Cache-Control`` (and ``Age``): no-store, no-cache, max-age, stale-if-error."""
    directives: dict[str, str | None] = {}
    for part in headers.get("Cache-Control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"') or None
    stale = _seconds(directives.get("stale-if-error"))
    if "no-store" in directives:
        return Freshness(None)
    if "no-cache" in directives:
        return Freshness(0.0, stale)
    max_age = _seconds(directives.get("max-age"))
    ttl = settings.default_ttl if max_age is None else min(max_age, settings.max_ttl)
    age = _seconds(headers.get("Age"))
    if age is not None:
        ttl = max(0.0, ttl - age)
    return Freshness(ttl, stale)


def _seconds(value: str | None) -> float | None:
    if value is None or not value.isdigit():
        return None
    return float(value)


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    fresh_until: float
    stale_until: float


class ResponseCache(Generic[K, V]):
    """A bounded map of answers by key, with single-flight loading and stale-if-error.

    clock: monotonic seconds; tests may pass their own to move time without sleeping.
    """

    __slots__ = (
        "_clock",
        "_entries",
        "_flights",
        "_observers",
        "evictions",
        "hits",
        "loads",
        "name",
        "settings",
        "stale_served",
    )

    def __init__(
        self, name: str, settings: CacheSettings | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.settings = settings or CacheSettings()
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._flights: dict[K, asyncio.Future[V]] = {}
        self._observers: list[Callable[[Lookup], None]] = []
        self.hits = 0
        self.loads = 0
        self.stale_served = 0
        self.evictions = 0

    def add_lookup_observer(self, observer: Callable[[Lookup], None]) -> None:
        """Call ``observer`` with ``hit``, ``miss`` or ``stale`` after every lookup (for metrics)."""
        self._observers.append(observer)

    def _observe(self, result: Lookup) -> None:
        for observer in self._observers:
            observer(result)

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: K) -> V | None:
        """The fresh value of ``key``, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.stale_until:
            del self._entries[key]
            return None
        if now >= entry.fresh_until:
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: K, value: V, freshness: Freshness) -> None:
        if freshness.ttl is None:
            return
        now = self._clock()
        stale_window = self.settings.stale_if_error if freshness.stale_if_error is None else freshness.stale_if_error
        self._entries[key] = _Entry(value, now + freshness.ttl, now + freshness.ttl + stale_window)
        self._entries.move_to_end(key)
        while len(self._entries) > self.settings.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    async def get_or_load(
        self, key: K, load: Callable[[], Awaitable[tuple[V, Freshness]]]
    ) -> ConnectorResult[V]:
        """A fresh cached value, else one shared load, else (on a transient failure) a stale one."""
        value = self.fresh(key)
        if value is not None:
            self.hits += 1
            self._observe("hit")
            return ConnectorResult(value, Source.CACHE, self.name)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._load(key, load))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        try:
            value = await asyncio.shield(flight)
        except TransientError as exc:
            entry = self._entries.get(key)
            if entry is None or self._clock() >= entry.stale_until:
                self._observe("miss")
                raise
            self.stale_served += 1
            self._observe("stale")
            return ConnectorResult(entry.value, Source.STALE, self.name, reason_of(exc))
        except BaseException:
            self._observe("miss")
            raise
        self._observe("miss")
        return ConnectorResult(value, Source.LIVE, self.name)

    async def _load(self, key: K, load: Callable[[], Awaitable[tuple[V, Freshness]]]) -> V:
        self.loads += 1
        value, freshness = await load()
        self.put(key, value, freshness)
        return value

    def _landed(self, key: K, flight: asyncio.Future[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved here, so a load nobody awaits any more is not reported as lost
