"""Retry tiers: after a transient failure an event leaves the hot path for a delayed topic.

    policy = RetryPolicy("orders-enricher", ["5s", "1m", "10m"])
    policy.tier_after(attempt=1)   # -> RetryTier(delay "5s", topic "orders-enricher.retry.5s")
    policy.tier_after(attempt=4)   # -> None: the DLQ
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from streams.names import retry_topic

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DELAY = re.compile(r"^(\d+)(ms|s|m|h)$")


def parse_delay(text: str) -> float:
    """``"500ms"``, ``"5s"``, ``"1m"`` or ``"2h"`` in seconds."""
    match = _DELAY.match(text.strip())
    if not match:
        raise ValueError(f"retry delay {text!r} must look like 500ms, 5s, 1m or 2h")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class RetryTier:
    label: str
    delay: float
    topic: str


class RetryPolicy:
    """The ordered retry tiers of a pipeline; attempt n (1-based) that fails goes to tier n."""

    __slots__ = ("tiers",)

    def __init__(self, pipeline: str, delays: list[str]) -> None:
        tiers = [RetryTier(label, parse_delay(label), retry_topic(pipeline, label)) for label in delays]
        if any(a.delay > b.delay for a, b in itertools.pairwise(tiers)):
            raise ValueError(f"retry delays {delays} must not decrease")
        self.tiers = tuple(tiers)

    def tier_after(self, attempt: int) -> RetryTier | None:
        """Where an event goes after its attempt number ``attempt`` failed transiently."""
        if 1 <= attempt <= len(self.tiers):
            return self.tiers[attempt - 1]
        return None

    @property
    def topics(self) -> list[str]:
        return [tier.topic for tier in self.tiers]
