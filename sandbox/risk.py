"""The sandbox's risk-score API: a deterministic score per order, its idempotency ledger, its rate limit.

Scoring is the API's state-changing effect (a real risk service records every score it gives).
The ledger applies it once per ``Idempotency-Key``: the single endpoint's key is the request's
header; an item of a batch has its own key (its ``idempotency_key`` field), else one derived
from the request's header and the item's position. A key seen again with the same request gets
the stored answer and no new effect; with a different request it is a conflict, which the
sandbox counts and scores as a new request (it never answers one request with another's score).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from typing import Any, Literal

from sandbox.customers import CUSTOMER_ID

_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_BATCH = 100
MAX_KEY_LENGTH = 255
_NOT_SCORED = ("id", "idempotency_key")  # fields of a request that do not change its score


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


def item_key_problem(key: Any) -> str | None:
    """What is wrong with an item's ``idempotency_key`` (its result is then a 422), or None."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        return f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} characters"
    return None


def fingerprint(request: Any) -> str:
    """What makes two requests under one key the same request: the body without the item's ``id``
    (its position in a batch) and ``idempotency_key``."""
    if isinstance(request, dict):
        request = {k: v for k, v in request.items() if k not in _NOT_SCORED}
    return json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)


class ScoreLedger:
    """The scores given by (endpoint, Idempotency-Key), least recently used first out at ``capacity``."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], tuple[str, dict[str, Any]]] = OrderedDict()

    def lookup(self, endpoint: str, key: str,
               request_fingerprint: str) -> tuple[Literal["new", "replay", "conflict"], dict[str, Any] | None]:
        """``("replay", answer)`` for a key seen with this request, ``("conflict", None)`` for a key
        seen with another, ``("new", None)`` for a key not seen (or forgotten)."""
        entry = self._entries.get((endpoint, key))
        if entry is None:
            return "new", None
        self._entries.move_to_end((endpoint, key))
        stored_fingerprint, answer = entry
        if stored_fingerprint != request_fingerprint:
            return "conflict", None
        return "replay", dict(answer)

    def remember(self, endpoint: str, key: str, request_fingerprint: str, answer: dict[str, Any]) -> None:
        self._entries[(endpoint, key)] = (request_fingerprint, dict(answer))
        self._entries.move_to_end((endpoint, key))
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
