"""Rate limit per connector that holds for the whole consumer group, and backs off on 429 (AIMD).

    limit = RateLimit("risk", RateLimitSettings(rate=100))   # 100 requests/s for the group
    limit.set_share(owned_partitions=3, total_partitions=12)  # this worker: 25/s
    waited = await limit.acquire()                            # seconds spent waiting

Each worker takes ``rate × owned / total``: the engine calls ``set_share`` on every rebalance,
so the workers' shares add up to the group's limit. A 429 halves the local rate (at most once
per ``decrease_cooldown``, since the calls in flight all see the same 429) and holds new calls
until its ``Retry-After`` has passed; the rate then grows back linearly to the share.

The pacing is a small leaky bucket of its own (``_Bucket``), whose rate can move while callers
wait; aiolimiter's cannot without touching its private state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("connectors.limiter")


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """A connector's request rate.

    rate: requests per second allowed for the whole consumer group.
    burst_seconds: how many seconds of the local rate may go out at once after an idle spell.
    decrease_factor: a 429 multiplies the local rate by this (multiplicative decrease).
    decrease_cooldown: seconds after a decrease during which further 429s do not decrease again.
    recovery_per_second: fraction of the share added back per second without a 429 (additive
        increase); 0.1 grows from nothing to the full share in ten seconds.
    min_rate: the local rate never drops below this (requests/s), so a worker owning no
        partitions, or one hammered by 429s, still gets a probe through.
    max_hold: the longest ``Retry-After`` (seconds) that holds new calls back.
    """

    rate: float
    burst_seconds: float = 1.0
    decrease_factor: float = 0.5
    decrease_cooldown: float = 1.0
    recovery_per_second: float = 0.1
    min_rate: float = 0.1
    max_hold: float = 30.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.min_rate <= 0 or self.burst_seconds <= 0:
            raise ValueError("rate, min_rate and burst_seconds must be positive")
        if not 0 < self.decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")


class _Bucket:
    """A leaky bucket whose rate may change while callers wait (the generic cell rate algorithm).

    Callers go one at a time, in arrival order: the one at the head takes the next slot, slots
    being ``1 / rate`` apart, as soon as that slot is at most ``capacity - 1`` slots ahead of now
    (an idle bucket lets ``capacity`` calls through at once, then paces). A new rate wakes the
    head at once to work its slot out again, so a recovering rate speeds up the callers already
    waiting. Owned here rather than borrowed: aiolimiter's bucket has no way to change its rate.
    """

    __slots__ = ("_changed", "_next", "_turn", "capacity", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._next = 0.0  # the theoretical time of the next slot
        self._turn = asyncio.Lock()  # FIFO: one caller works out its slot at a time
        self._changed = asyncio.Event()

    def set_rate(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self._changed.set()

    async def acquire(self) -> None:
        async with self._turn:
            while True:
                now = time.monotonic()
                interval = 1.0 / self.rate
                slot = max(self._next, now)
                wait = slot - (self.capacity - 1) * interval - now
                if wait <= 0:
                    self._next = slot + interval
                    return
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)


class RateLimit:
    """One connector's local share of the group's rate, adjusted by AIMD on 429s."""

    __slots__ = (
        "_bucket",
        "_ceiling",
        "_hold_until",
        "_last_decrease",
        "_last_growth",
        "_rate",
        "_wait_observers",
        "acquired",
        "decreases",
        "name",
        "settings",
        "share",
        "wait_seconds_total",
    )

    def __init__(self, name: str, settings: RateLimitSettings) -> None:
        self.name = name
        self.settings = settings
        self.share = 1.0
        self._ceiling = settings.rate
        self._rate = settings.rate
        self._bucket = _Bucket(self._rate, self._capacity(self._rate))
        self._hold_until = 0.0
        self._last_decrease = float("-inf")
        self._last_growth = time.monotonic()
        self._wait_observers: list[Callable[[float], None]] = []
        #: calls that got through, and the seconds they spent waiting in total (for metrics)
        self.acquired = 0
        self.wait_seconds_total = 0.0
        #: multiplicative decreases so far (each a 429 that shrank the rate)
        self.decreases = 0

    def __repr__(self) -> str:
        return f"<RateLimit {self.name} {self._rate:.2f}/s of {self._ceiling:.2f}/s>"

    @property
    def rate(self) -> float:
        """The local rate now, requests per second."""
        self._grow(time.monotonic())
        return self._rate

    @property
    def ceiling(self) -> float:
        """This worker's share of the group's rate: what the local rate grows back to."""
        return self._ceiling

    def add_wait_observer(self, observer: Callable[[float], None]) -> None:
        """Call ``observer(seconds)`` after every acquire, with the time it waited."""
        self._wait_observers.append(observer)

    def set_share(self, owned_partitions: int, total_partitions: int) -> None:
        """Take ``rate × owned / total`` of the group's rate; call on every rebalance.

        The fraction of the share that AIMD has taken away is kept: a worker being throttled
        stays throttled through a rebalance.
        """
        if total_partitions <= 0 or not 0 <= owned_partitions <= total_partitions:
            raise ValueError("need 0 <= owned_partitions <= total_partitions and total_partitions > 0")
        now = time.monotonic()
        self._grow(now)
        fraction_kept = self._rate / self._ceiling if self._ceiling > 0 else 1.0
        self.share = owned_partitions / total_partitions
        self._ceiling = max(self.settings.min_rate, self.settings.rate * self.share)
        self._set_rate(self._ceiling * fraction_kept)
        log.info("rate limit %s: share %d/%d -> %.2f/s", self.name, owned_partitions, total_partitions, self._ceiling)

    async def acquire(self) -> float:
        """Wait until a call may go out; return the seconds waited."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        hold = self._hold_until - time.monotonic()
        if hold > 0:
            await asyncio.sleep(hold)
        self._grow(time.monotonic())
        await self._bucket.acquire()
        waited = loop.time() - started
        self.acquired += 1
        self.wait_seconds_total += waited
        for observer in self._wait_observers:
            observer(waited)
        return waited

    def on_throttled(self, retry_after: float | None = None) -> None:
        """The API answered 429: shrink the local rate and hold new calls for ``Retry-After``."""
        now = time.monotonic()
        if retry_after is not None and retry_after > 0:
            self._hold_until = max(self._hold_until, now + min(retry_after, self.settings.max_hold))
        if now - self._last_decrease < self.settings.decrease_cooldown:
            return
        self._grow(now)
        self._last_decrease = now
        self.decreases += 1
        self._set_rate(self._rate * self.settings.decrease_factor)
        log.info("rate limit %s: 429, local rate down to %.2f/s", self.name, self._rate)

    def on_success(self) -> None:
        """A call went through: let the rate grow back (additively, by time since the last growth)."""
        self._grow(time.monotonic())

    def _grow(self, now: float) -> None:
        elapsed = now - self._last_growth
        self._last_growth = now
        if self._rate >= self._ceiling or elapsed <= 0:
            return
        self._set_rate(self._rate + self._ceiling * self.settings.recovery_per_second * elapsed)

    def _set_rate(self, rate: float) -> None:
        rate = min(self._ceiling, max(self.settings.min_rate, rate))
        if rate == self._rate and self._bucket.capacity == self._capacity(rate):
            return
        self._rate = rate
        self._bucket.set_rate(rate, self._capacity(rate))

    def _capacity(self, rate: float) -> float:
        return max(1.0, rate * self.settings.burst_seconds)
