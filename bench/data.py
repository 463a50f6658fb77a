"""The benchmark's input: ~500-byte Avro OrderPlaced records, made before any timing starts.

    data = make_dataset(100_000, "zipf")
    data.values[0]            # Confluent-framed Avro bytes, ready to produce
    data.hottest_share        # fraction of events on the most frequent key

Records start from ``pipelines.orders_samples.sample_orders`` and get more line items until the framed
value is about ``target_bytes`` (orders of 20-35 lines; the sizes vary around the target).
Keys are customer ids: uniform over ``customers`` ids, or Zipf-distributed (rank k has weight
k^-s) over the same ids, so the hottest key bounds what per-key ordering allows.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.serde import AvroSerde, EmbeddedRegistry

CASES = ("uniform", "zipf")
CUSTOMERS = 10_000
ZIPF_S = 1.1
_SKUS = [f"SKU-{n:05d}" for n in range(1, 5000)]


@dataclass(frozen=True)
class Dataset:
    """Encoded events of one key distribution, in production order."""

    case: str
    event_ids: list[str]
    keys: list[bytes]
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def mean_value_bytes(self) -> float:
        return statistics.fmean(len(v) for v in self.values) if self.values else 0.0

    @property
    def hottest_share(self) -> float:
        """Fraction of the events that carry the most frequent key."""
        if not self.keys:
            return 0.0
        return Counter(self.keys).most_common(1)[0][1] / len(self.keys)

    def slice(self, start: int, stop: int) -> Dataset:
        return Dataset(self.case, self.event_ids[start:stop], self.keys[start:stop], self.values[start:stop])


def zipf_share_of_hottest(customers: int = CUSTOMERS, s: float = ZIPF_S) -> float:
    """The expected share of rank 1 under Zipf(s) over ``customers`` keys."""
    total: float = sum(float(k) ** -s for k in range(1, customers + 1))
    return 1.0 / total


def customer_keys(count: int, case: str, *, seed: int, customers: int = CUSTOMERS) -> list[str]:
    """``count`` customer ids: uniform, or Zipf(s=1.1) with ranks shuffled over the ids."""
    rng = random.Random(seed)
    ids = [f"C{n:06d}" for n in range(customers)]
    if case == "uniform":
        return [ids[rng.randrange(customers)] for _ in range(count)]
    if case == "zipf":
        rng.shuffle(ids)  # the hottest key is an arbitrary id, on an arbitrary partition
        weights = accumulate(float(k) ** -ZIPF_S for k in range(1, customers + 1))
        return rng.choices(ids, cum_weights=list(weights), k=count)
    raise ValueError(f"unknown case {case!r}; expected one of {CASES}")


def make_dataset(
    count: int, case: str, *, seed: int = 11, target_bytes: int = 500, prefix: str = "evt",
    serde: AvroSerde | None = None,
) -> Dataset:
    """Generate and encode ``count`` events; values average about ``target_bytes``."""
    serde = serde or AvroSerde(EmbeddedRegistry.load())
    schema = serde.registry.latest(ORDER_PLACED)
    rng = random.Random(seed + 1)
    keys = customer_keys(count, case, seed=seed)
    orders = sample_orders(count, seed=seed, customers=CUSTOMERS)
    item_bytes = _mean_item_bytes(serde, schema, orders[0])
    event_ids: list[str] = []
    values: list[bytes] = []
    for n, (order, customer_id) in enumerate(zip(orders, keys, strict=True)):
        order["customer_id"] = customer_id
        order["event_id"] = f"{prefix}-{case}-{seed}-{n:07d}"
        base = len(serde.encode_with(schema, {**order, "items": []}))
        wanted = rng.randint(target_bytes - 60, target_bytes + 60)
        lines = max(1, round((wanted - base) / item_bytes))
        order["items"] = [_line_item(rng) for _ in range(lines)]
        order["amount_cents"] = sum(i["quantity"] * i["unit_price_cents"] for i in order["items"])
        event_ids.append(order["event_id"])
        values.append(serde.encode_with(schema, order))
    return Dataset(case, event_ids, [k.encode() for k in keys], values)


def _line_item(rng: random.Random) -> dict[str, Any]:
    return {"sku": rng.choice(_SKUS), "quantity": rng.randint(1, 9), "unit_price_cents": rng.randint(99, 99_999)}


def _mean_item_bytes(serde: AvroSerde, schema: Any, order: dict[str, Any]) -> float:
    rng = random.Random(0)
    lines = [_line_item(rng) for _ in range(200)]
    with_lines = len(serde.encode_with(schema, {**order, "items": lines}))
    without = len(serde.encode_with(schema, {**order, "items": []}))
    return (with_lines - without) / len(lines)
