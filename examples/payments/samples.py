"""Sample Payment events, deterministic for a seed: the payments example's and its tests' input.

The sandbox decides from the records alone what their lookups answer (``sandbox.payments``):
accounts whose number is divisible by 97 are unknown (404), and a negative ``amount_cents``
(see ``invalid_fraction``) is a per-item 422 from the fraud API's batch endpoint.
"""

from __future__ import annotations

import ipaddress
import math
import random
import time
import uuid
from typing import Any

_CURRENCIES = ("EUR", "USD", "GBP", "SEK", "JPY")
_CURRENCY_WEIGHTS = (45, 30, 15, 5, 5)  # mostly EUR, USD and GBP


def sample_payments(
    count: int, *, seed: int = 7, accounts: int = 500, run: str | None = None, invalid_fraction: float = 0.0
) -> list[dict[str, Any]]:
    """``count`` Payment records with unique event ids, over accounts ``A000001`` … ``A%06d % accounts``.

    ``invalid_fraction`` of the payments (rounded to a whole number, chosen by the seed) get a
    negative ``amount_cents``, which the fraud API refuses per item with a 422. The other fields,
    and which payments are made invalid, depend on the seed only: the same seed gives the same
    payments whatever the fraction, except for the negated amounts.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    if accounts < 1:
        raise ValueError("there must be at least one account")
    if not 0.0 <= invalid_fraction <= 1.0:
        raise ValueError("invalid_fraction is between 0 and 1")
    rng = random.Random(seed)
    run = run or uuid.UUID(int=rng.getrandbits(128)).hex[:12]
    now_ms = int(time.time() * 1000)
    payments: list[dict[str, Any]] = []
    for n in range(count):
        amount = min(5_000_000, max(100, int(rng.lognormvariate(math.log(4_000), 1.2))))
        payments.append(
            {
                "event_id": f"evt-{run}-{n:07d}",
                "payment_id": f"pay-{run}-{n:07d}",
                "account_id": f"A{rng.randint(1, accounts):06d}",
                "amount_cents": amount,
                "currency": rng.choices(_CURRENCIES, weights=_CURRENCY_WEIGHTS)[0],
                "ip": _public_ipv4(rng),
                "created_at": now_ms - rng.randint(0, 60_000),
            }
        )
    invalid = round(count * invalid_fraction)
    if invalid:  # a generator of its own, so the other fields stay the same for a seed
        for index in random.Random(seed + 1).sample(range(count), invalid):
            payments[index]["amount_cents"] = -int(payments[index]["amount_cents"])
    return payments


def _public_ipv4(rng: random.Random) -> str:
    """A random globally routable IPv4 address (no private, loopback, multicast or reserved ones)."""
    while True:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global and not address.is_multicast:
            return str(address)
