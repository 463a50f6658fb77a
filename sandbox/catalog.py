"""The sandbox's product catalog: ``size`` deterministic products, paged by an opaque cursor."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

_ADJECTIVES = ("Quiet", "Rapid", "Sturdy", "Bright", "Compact", "Classic", "Modular", "Gentle")
_NOUNS = ("Kettle", "Lamp", "Backpack", "Desk", "Headset", "Bottle", "Chair", "Router")
_CATEGORIES = ("kitchen", "lighting", "travel", "office", "audio", "outdoor")
_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def product(n: int) -> dict[str, Any]:
    """Product number ``n`` (1-based)."""
    return {
        "product_id": f"P{n:06d}",
        "sku": f"SKU-{n * 7919 % 1_000_000:06d}",
        "name": f"{_ADJECTIVES[n % len(_ADJECTIVES)]} {_NOUNS[n // len(_ADJECTIVES) % len(_NOUNS)]} {n}",
        "category": _CATEGORIES[n % len(_CATEGORIES)],
        "price_cents": 499 + n * 37 % 50_000,
        "currency": "EUR",
        "updated_at": _EPOCH_MS + n * 60_000,
    }


def encode_cursor(after: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The product number a cursor continues after, or None if it is not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        return None
    after = data.get("after") if isinstance(data, dict) else None
    return after if isinstance(after, int) and after >= 0 else None


def page(size: int, after: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Products after number ``after``, at most ``limit``; and the ``after`` of the next page, if any."""
    last = min(size, after + limit)
    items = [product(n) for n in range(after + 1, last + 1)]
    return items, (last if last < size else None)
