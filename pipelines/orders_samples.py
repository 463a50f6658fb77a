"""Sample OrderPlaced events, deterministic for a seed: the demo's and the tests' input."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any, TypedDict

# Products 1..400 of the sandbox's catalog (sandbox.catalog.product), so that lookups find them.
_SKUS = [f"SKU-{n * 7919 % 1_000_000:06d}" for n in range(1, 401)]
_CHANNELS = ("web", "mobile", "store")
_CURRENCIES = ("EUR", "USD", "GBP", "SEK", "JPY")
_COUNTRIES = ("DE", "FR", "GB", "NL", "SE", "US", "CA", "JP")
_COUPONS = ("WELCOME10", "SPRING24", "FREESHIP", "LOYAL5")


class _Item(TypedDict):
    sku: str
    quantity: int
    unit_price_cents: int


def sample_orders(
    count: int, *, seed: int = 7, customers: int = 1000, run: str | None = None, version: int = 1
) -> list[dict[str, Any]]:
    """``count`` OrderPlaced records with unique event ids, over ``customers`` customers.

    ``version`` is the OrderPlaced schema version the records are shaped for: 2 adds
    ``coupon_code`` (a code on about a third of the orders, else None). The other fields are the
    same for both versions and the same seed.
    """
    if version not in (1, 2):
        raise ValueError(f"OrderPlaced has versions 1 and 2, not {version}")
    rng = random.Random(seed)
    run = run or uuid.UUID(int=rng.getrandbits(128)).hex[:12]
    now_ms = int(time.time() * 1000)
    orders = []
    for n in range(count):
        items: list[_Item] = [
            {"sku": rng.choice(_SKUS), "quantity": rng.randint(1, 5), "unit_price_cents": rng.randint(199, 49_999)}
            for _ in range(rng.randint(1, 4))
        ]
        orders.append(
            {
                "event_id": f"evt-{run}-{n:07d}",
                "order_id": f"ord-{run}-{n:07d}",
                "customer_id": f"C{rng.randrange(customers):06d}",
                "placed_at": now_ms - rng.randint(0, 60_000),
                "currency": rng.choice(_CURRENCIES),
                "amount_cents": sum(i["quantity"] * i["unit_price_cents"] for i in items),
                "channel": rng.choice(_CHANNELS),
                "shipping_country": rng.choice(_COUNTRIES),
                "items": items,
            }
        )
    if version >= 2:  # a generator of its own, so v1 fields stay the same for a seed
        coupons = random.Random(seed + 1)
        for order in orders:
            order["coupon_code"] = coupons.choice(_COUPONS) if coupons.random() < 1 / 3 else None
    return orders
