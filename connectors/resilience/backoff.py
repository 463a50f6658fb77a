"""In-call retry policy: exponential backoff with full jitter, bounded by attempts and elapsed time.

    policy = RetryPolicy(max_attempts=3, max_elapsed=5.0)
    delay = policy.delay(attempt=1, elapsed=0.12, retry_after=None)   # None: give up now

Written by hand because the decision needs three inputs a generic retry library keeps apart:
the attempt number, the time already spent, and the server's ``Retry-After``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a transiently failed call again, and after how long.

    max_attempts: attempts in one call, the first included (1 = no retries).
    max_elapsed: seconds one call may take, attempts and waits together; a wait that would
        end past it is not started.
    backoff_base / backoff_cap: attempt n (1-based) is followed by a wait drawn uniformly from
        [0, min(cap, base * 2**(n-1))] ("full jitter": callers that failed together spread out).
    retry_after_cap: a server's ``Retry-After`` is obeyed exactly up to this many seconds;
        a longer one ends the call at once (the event then leaves the hot path for a retry tier).
    """

    max_attempts: int = 3
    max_elapsed: float = 15.0
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    retry_after_cap: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.max_elapsed, self.backoff_base, self.backoff_cap, self.retry_after_cap) < 0:
            raise ValueError("retry times must not be negative")

    def backoff_bound(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based) when there is no Retry-After."""
        return min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))

    def delay(
        self, attempt: int, elapsed: float, retry_after: float | None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to stop retrying and raise."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            if retry_after > self.retry_after_cap:
                return None
            wait = max(0.0, retry_after)
        else:
            wait = (rng or random).uniform(0.0, self.backoff_bound(attempt))
        if elapsed + wait > self.max_elapsed:
            return None
        return wait
