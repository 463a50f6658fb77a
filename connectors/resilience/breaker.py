"""Circuit breaker: stop calling an API that keeps failing or crawling, probe it, resume by itself.

    breaker = CircuitBreaker("customers", BreakerSettings(minimum_calls=20), probe=ping)
    body = await breaker.call(lambda: fetch(...))      # CircuitOpenError while open
    await breaker.wait_until_closed()                  # what the engine awaits before resuming

States follow Resilience4j: ``closed`` records outcomes in a sliding window (the last N calls,
or the last N seconds) and opens when, after ``minimum_calls``, the failure rate or the
slow-call rate reaches its threshold. ``open`` rejects every call for ``open_duration``, then
turns ``half_open`` by itself and lets ``half_open_probes`` calls through; their rates decide
between ``closed`` and ``open`` again. With a ``probe`` the breaker makes those calls itself,
so it recovers even when the engine has paused all traffic to it.

Every transition is an observable event: it is logged, counted in ``transitions`` and handed
to every listener added with ``add_listener``. Written by hand: no asyncio breaker library
offers both rate thresholds, a time window and transition events.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from connectors.errors import CircuitOpenError, ConnectorError, TransientError

T = TypeVar("T")

log = logging.getLogger("connectors.breaker")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a breaker opens and how it recovers.

    window: ``count`` keeps the outcomes of the last ``window_size`` calls; ``time`` keeps the
        outcomes of the last ``window_size`` seconds (in one-second buckets, so memory is bounded).
    minimum_calls: no verdict before this many calls are in the window.
    failure_rate_threshold: fraction of failed calls (0..1] that opens the breaker.
    slow_call_rate_threshold: fraction of slow calls (0..1] that opens it; 1.0 means "all slow".
    slow_call_duration: a call taking at least this many seconds is slow (failed or not).
    open_duration: seconds the breaker stays open before it lets probes through.
    half_open_probes: calls let through while half-open; their rates decide closed or open.

    Failures are transient errors (timeouts, connection errors, 5xx, 408). A 429 is neither a
    failure nor a success (the rate limiter handles it); a permanent error means the API
    answered, so it counts as a success.
    """

    window: Literal["count", "time"] = "count"
    window_size: int = 100
    minimum_calls: int = 20
    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 1.0
    slow_call_duration: float = 2.0
    open_duration: float = 5.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if self.window not in ("count", "time"):
            raise ValueError("window must be 'count' or 'time'")
        if self.window_size < 1 or self.minimum_calls < 1 or self.half_open_probes < 1:
            raise ValueError("window_size, minimum_calls and half_open_probes must be at least 1")
        for rate in (self.failure_rate_threshold, self.slow_call_rate_threshold):
            if not 0 < rate <= 1:
                raise ValueError("rate thresholds are fractions in (0, 1]")
        if self.open_duration < 0 or self.slow_call_duration <= 0:
            raise ValueError("open_duration must not be negative, slow_call_duration must be positive")


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """One state change, as listeners receive it. ``at`` is epoch seconds."""

    breaker: str
    from_state: BreakerState
    to_state: BreakerState
    at: float
    calls: int
    failure_rate: float
    slow_call_rate: float


@dataclass(frozen=True, slots=True)
class _Tally:
    calls: int
    failures: int
    slow: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


class _CountWindow:
    """The outcomes of the last ``size`` calls, with running totals."""

    __slots__ = ("_failures", "_outcomes", "_slow")

    def __init__(self, size: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)
        self._failures = 0
        self._slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        if len(self._outcomes) == self._outcomes.maxlen:
            old_failed, old_slow = self._outcomes[0]
            self._failures -= old_failed
            self._slow -= old_slow
        self._outcomes.append((failed, slow))
        self._failures += failed
        self._slow += slow

    def tally(self, now: float) -> _Tally:
        return _Tally(len(self._outcomes), self._failures, self._slow)

    def clear(self) -> None:
        self._outcomes.clear()
        self._failures = self._slow = 0


class _TimeWindow:
    """The outcomes of the last ``seconds`` seconds, aggregated per whole second."""

    __slots__ = ("_buckets", "_calls", "_failures", "_seconds", "_slow")

    def __init__(self, seconds: int) -> None:
        self._seconds = seconds
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow]
        self._calls = self._failures = self._slow = 0

    def _trim(self, now: float) -> None:
        oldest = int(now) - self._seconds
        while self._buckets and self._buckets[0][0] <= oldest:
            _, calls, failures, slow = self._buckets.popleft()
            self._calls -= calls
            self._failures -= failures
            self._slow -= slow

    def record(self, failed: bool, slow: bool, now: float) -> None:
        self._trim(now)
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow
        self._calls += 1
        self._failures += failed
        self._slow += slow

    def tally(self, now: float) -> _Tally:
        self._trim(now)
        return _Tally(self._calls, self._failures, self._slow)

    def clear(self) -> None:
        self._buckets.clear()
        self._calls = self._failures = self._slow = 0


class Permit:
    """Leave to make one call; settle it with ``record`` or ``release``."""

    __slots__ = ("generation", "settled")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.settled = False


class CircuitBreaker:
    """One connector's breaker. Use ``call``, or ``acquire`` + ``record`` around a call.

    name: the connector's name (in errors, logs and events).
    probe: an async callable making one representative call to the API WITHOUT going through
        this breaker; when given, the breaker runs it itself while half-open.
    """

    __slots__ = (
        "_closed",
        "_generation",
        "_half_open",
        "_half_open_left",
        "_listeners",
        "_open_until",
        "_probe",
        "_probe_task",
        "_state",
        "_timer",
        "_window",
        "name",
        "rejected_calls",
        "settings",
        "transitions",
    )

    def __init__(
        self,
        name: str,
        settings: BreakerSettings | None = None,
        *,
        probe: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or BreakerSettings()
        s = self.settings
        self._window: _CountWindow | _TimeWindow = (
            _CountWindow(s.window_size) if s.window == "count" else _TimeWindow(s.window_size)
        )
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._open_until = 0.0
        self._half_open_left = 0
        self._half_open: list[tuple[bool, bool]] = []
        self._closed = asyncio.Event()
        self._closed.set()
        self._listeners: list[Callable[[BreakerTransition], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._probe = probe
        self._probe_task: asyncio.Task[None] | None = None
        #: transitions so far, keyed "closed->open", "open->half_open", ...
        self.transitions: Counter[str] = Counter()
        #: calls refused because the breaker was open or out of half-open probes
        self.rejected_calls = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self._state}>"

    @property
    def state(self) -> BreakerState:
        return self._state

    def set_probe(self, probe: Callable[[], Awaitable[object]] | None) -> None:
        self._probe = probe

    def add_listener(self, listener: Callable[[BreakerTransition], None]) -> None:
        """Call ``listener`` with every transition, synchronously; its exceptions are logged."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[BreakerTransition], None]) -> None:
        self._listeners.remove(listener)

    async def wait_until_closed(self, timeout: float | None = None) -> bool:
        """Return once the breaker is closed (True), or after ``timeout`` seconds (False)."""
        if self._state is BreakerState.CLOSED:
            return True
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Make one call through the breaker, recording its outcome and duration."""
        permit = self.acquire()
        started = time.monotonic()
        try:
            result = await fn()
        except BaseException as exc:
            self.record(permit, time.monotonic() - started, exc)
            raise
        self.record(permit, time.monotonic() - started, None)
        return result

    def acquire(self) -> Permit:
        """Leave for one call, or ``CircuitOpenError`` when the breaker refuses it."""
        if self._state is BreakerState.OPEN:
            if time.monotonic() < self._open_until:
                self._reject()
            self._transition(BreakerState.HALF_OPEN, _Tally(0, 0, 0))
        if self._state is BreakerState.HALF_OPEN:
            if self._half_open_left <= 0:
                self._reject()
            self._half_open_left -= 1
        return Permit(self._generation)

    def record(self, permit: Permit, duration: float, error: BaseException | None) -> None:
        """Settle a permit with the call's outcome: ``error`` is None on success."""
        if permit.settled:
            return
        permit.settled = True
        verdict = _verdict(error)
        if verdict is None:
            self._give_back(permit)
            return
        if permit.generation != self._generation:
            return  # started before the last transition: it says nothing about the state now
        failed = verdict
        slow = duration >= self.settings.slow_call_duration
        if self._state is BreakerState.CLOSED:
            self._window.record(failed, slow, time.monotonic())
            tally = self._window.tally(time.monotonic())
            if tally.calls >= self.settings.minimum_calls and self._over_threshold(tally):
                self._transition(BreakerState.OPEN, tally)
        elif self._state is BreakerState.HALF_OPEN:
            self._half_open.append((failed, slow))
            if len(self._half_open) >= self.settings.half_open_probes:
                tally = _Tally(
                    len(self._half_open), sum(f for f, _ in self._half_open), sum(s for _, s in self._half_open)
                )
                self._transition(BreakerState.OPEN if self._over_threshold(tally) else BreakerState.CLOSED, tally)

    def release(self, permit: Permit) -> None:
        """Give a permit back unused (the call was cancelled or never made)."""
        if not permit.settled:
            permit.settled = True
            self._give_back(permit)

    async def close(self) -> None:
        """Stop the open timer and any probes in flight."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._probe_task = self._probe_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- internals ---------------------------------------------------------------------------

    def _over_threshold(self, tally: _Tally) -> bool:
        s = self.settings
        return tally.failure_rate >= s.failure_rate_threshold or tally.slow_call_rate >= s.slow_call_rate_threshold

    def _reject(self) -> None:
        self.rejected_calls += 1
        raise CircuitOpenError(
            f"{self.name}: circuit breaker is {self._state}, call not made",
            connector=self.name,
            retry_after=max(0.0, self._open_until - time.monotonic()),
            breaker=self,
        )

    def _give_back(self, permit: Permit) -> None:
        if permit.generation == self._generation and self._state is BreakerState.HALF_OPEN:
            self._half_open_left += 1

    def _transition(self, to: BreakerState, tally: _Tally) -> None:
        before, self._state = self._state, to
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if to is BreakerState.CLOSED:
            self._window.clear()
            self._closed.set()
        else:
            self._closed.clear()
        if to is BreakerState.OPEN:
            self._open_until = time.monotonic() + self.settings.open_duration
            self._schedule_half_open()
        elif to is BreakerState.HALF_OPEN:
            self._half_open_left = self.settings.half_open_probes
            self._half_open = []
            self._start_probes()
        self._announce(BreakerTransition(
            self.name, before, to, time.time(), tally.calls, tally.failure_rate, tally.slow_call_rate
        ))

    def _announce(self, event: BreakerTransition) -> None:
        self.transitions[f"{event.from_state}->{event.to_state}"] += 1
        log.log(
            logging.WARNING if event.to_state is BreakerState.OPEN else logging.INFO,
            "circuit breaker %s: %s -> %s (calls %d, failure rate %.0f%%, slow-call rate %.0f%%)",
            self.name, event.from_state, event.to_state, event.calls,
            100 * event.failure_rate, 100 * event.slow_call_rate,
            extra={"connector": self.name, "breaker_from": str(event.from_state), "breaker_to": str(event.to_state)},
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the breaker
                log.exception("circuit breaker %s: transition listener failed", self.name)

    def _schedule_half_open(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next acquire() half-opens it lazily
        generation = self._generation
        self._timer = loop.call_later(self.settings.open_duration, self._open_elapsed, generation)

    def _open_elapsed(self, generation: int) -> None:
        self._timer = None
        if self._state is BreakerState.OPEN and self._generation == generation:
            self._transition(BreakerState.HALF_OPEN, _Tally(0, 0, 0))

    def _start_probes(self) -> None:
        if self._probe is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._probe_task = loop.create_task(self._run_probes(self._generation, self._probe))

    async def _run_probes(self, generation: int, probe: Callable[[], Awaitable[object]]) -> None:
        for _ in range(self.settings.half_open_probes):
            if self._state is not BreakerState.HALF_OPEN or self._generation != generation:
                return
            try:
                await self.call(probe)
            except CircuitOpenError:
                return  # real calls took the probe permits; their outcomes decide
            except Exception:  # noqa: BLE001 - the outcome is recorded by call()
                log.debug("circuit breaker %s: probe failed", self.name)


def _verdict(error: BaseException | None) -> bool | None:
    """True: a failure; False: a success; None: says nothing about the API's health."""
    if error is None:
        return False
    if isinstance(error, asyncio.CancelledError | CircuitOpenError):
        return None
    if isinstance(error, TransientError):
        return None if error.status == 429 else True
    if isinstance(error, ConnectorError):
        return False  # the API answered; the request was wrong
    return True if isinstance(error, Exception) else None
