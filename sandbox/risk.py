"""The sandbox's risk-score API: a deterministic score per order, and the API's rate limit."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from sandbox.customers import CUSTOMER_ID

_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_BATCH = 100


def risk_score(item: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(score answer, None) for a valid request, else (None, what is wrong)."""
    if not isinstance(item, dict):
        return None, "request is not an object"
    customer_id, amount, currency = item.get("customer_id"), item.get("amount_cents"), item.get("currency")
    if not isinstance(customer_id, str) or not CUSTOMER_ID.match(customer_id):
        return None, "customer_id is not a customer id"
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        return None, "amount_cents must be a non-negative integer"
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        return None, "currency must be an ISO 4217 code"
    base = hashlib.sha256(customer_id.encode()).digest()[0] * 60 // 256
    score = min(100, base + min(40, amount // 10_000))
    band = "low" if score < 34 else "medium" if score < 67 else "high"
    return {"score": score, "band": band, "model": "sandbox-1"}, None


class TokenBucket:
    """The API's own rate limit: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    def take(self) -> float:
        """0 when a request may pass (and takes a token), else seconds until one may."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate
