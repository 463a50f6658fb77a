"""Rules beyond the schema: what a well-formed event must also satisfy before anything is called.

    validate_order_placed(event)        # raises streams.ValidationError (permanent → DLQ)
    validate_enriched_order(record)     # the output, before it is encoded and produced

Avro says a field is a string; these rules say which strings: ids of a safe shape and length,
ISO codes, bounded amounts and item lists. An event that breaks one goes to the DLQ at once,
before any API sees it. Messages name the field and show at most a short, escaped excerpt of
the value (it is untrusted input and ends up in a header).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from streams import ValidationError

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
CURRENCY = re.compile(r"[A-Z]{3}")  # ISO 4217 alphabetic code shape
COUNTRY = re.compile(r"[A-Z]{2}")  # ISO 3166-1 alpha-2 shape
CHANNEL = re.compile(r"[a-z][a-z0-9_-]*")
COUPON = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

MAX_EVENT_ID = 128
MAX_ID = 64
MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_CENTS = 10**12  # ten billion in major units: beyond any real order
MAX_TEXT = 1000  # any string of the output (API fields, degraded reasons)
EARLIEST_MS = 946_684_800_000  # 2000-01-01
MAX_FUTURE_MS = 24 * 3600 * 1000  # clocks drift; a day ahead is not drift


def validate_order_placed(event: Mapping[str, Any]) -> None:
    """An OrderPlaced that breaks a rule raises ``ValidationError`` naming the field."""
    _matches(event, "event_id", ID, MAX_EVENT_ID)
    _matches(event, "order_id", ID, MAX_ID)
    _matches(event, "customer_id", ID, MAX_ID)
    _matches(event, "currency", CURRENCY, 3)
    _matches(event, "shipping_country", COUNTRY, 2)
    _matches(event, "channel", CHANNEL, 32)
    _between(event, "amount_cents", 0, MAX_CENTS)
    _between({"placed_at": _epoch_ms(event.get("placed_at"))}, "placed_at", EARLIEST_MS,
             int(time.time() * 1000) + MAX_FUTURE_MS)
    coupon = event.get("coupon_code")
    if coupon is not None:
        _matches(event, "coupon_code", COUPON, 32)
    items = event.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        count = len(items) if isinstance(items, list) else "no"
        raise ValidationError(f"items: {count} line items; an order has 1 to {MAX_ITEMS}")
    if _items_ok(items):
        return  # the common case, without building the messages' field paths
    for n, item in enumerate(items):
        if _item_ok(item):
            continue
        if not isinstance(item, Mapping):
            raise ValidationError(f"items[{n}] is not a record")
        _matches(item, "sku", ID, MAX_ID, where=f"items[{n}].")
        _between(item, "quantity", 1, MAX_QUANTITY, where=f"items[{n}].")
        _between(item, "unit_price_cents", 0, MAX_CENTS, where=f"items[{n}].")


def validate_enriched_order(record: Mapping[str, Any], validated_input: Mapping[str, Any] | None = None) -> None:
    """The output's own rules (the encoder checks types only): the order's as above, and every
    string that came from an API short and one line.

    ``validated_input`` is the event the output was built from, already through
    ``validate_order_placed``: the output's fields that are the very same objects as its fields
    (copied, not rebuilt; a pipeline must not mutate its input in place) passed these rules
    there and are not walked again. That halves validation's cost per event.
    """
    if validated_input is None:
        fresh: Mapping[str, Any] = record
        validate_order_placed(record)
    else:
        fresh = {key: value for key, value in record.items()
                 if key not in _ORDER_FIELDS or validated_input.get(key, _MISSING) is not value}
        if any(key in _ORDER_FIELDS for key in fresh):
            validate_order_placed(record)  # the pipeline changed an order field: check them all
    if not _strings_ok(fresh):  # then walk again, naming the field
        _bounded_strings(fresh, "")


# What validate_order_placed checks, every string among them by a pattern of printable characters.
_ORDER_FIELDS = frozenset({"event_id", "order_id", "customer_id", "placed_at", "currency", "amount_cents",
                           "channel", "shipping_country", "items", "coupon_code"})
_MISSING = object()


def _items_ok(items: list[Any]) -> bool:
    """Whether every line item passes ``_item_ok``, in one loop (no call per item: an order has
    up to a hundred)."""
    good_skus = _GOOD_SKUS
    for item in items:
        if type(item) is not dict:
            return False
        sku, quantity, price = item.get("sku"), item.get("quantity"), item.get("unit_price_cents")
        if (type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY
                or type(price) is not int or not 0 <= price <= MAX_CENTS
                or type(sku) is not str or (sku not in good_skus and not _good_sku(sku))):
            return False
    return True


def _item_ok(item: Any) -> bool:
    """What the line item rules below accept, checked without naming fields (the fast path)."""
    if type(item) is not dict:
        return False
    sku, quantity, price = item.get("sku"), item.get("quantity"), item.get("unit_price_cents")
    return (type(sku) is str and (sku in _GOOD_SKUS or _good_sku(sku))
            and type(quantity) is int and 1 <= quantity <= MAX_QUANTITY
            and type(price) is int and 0 <= price <= MAX_CENTS)


# SKUs repeat across orders (a catalog's worth of them): each passes the pattern once, then is
# a set lookup. Bounded: emptied when full.
_GOOD_SKUS: set[str] = set()
_GOOD_SKUS_MAX = 50_000


def _good_sku(sku: str) -> bool:
    if not (0 < len(sku) <= MAX_ID and ID.fullmatch(sku) is not None):
        return False
    if len(_GOOD_SKUS) >= _GOOD_SKUS_MAX:
        _GOOD_SKUS.clear()
    _GOOD_SKUS.add(sku)
    return True


def _strings_ok(value: Any) -> bool:
    """Whether ``_bounded_strings`` would pass ``value``, without building field paths."""
    if isinstance(value, str):
        return len(value) <= MAX_TEXT and value.isprintable()
    items: Iterable[object]
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return False
        items = value
    elif type(value) is dict or (type(value) not in _SCALARS and isinstance(value, Mapping)):
        items = value.values()
    else:
        return True
    for item in items:  # a loop, not all(<generator>): this runs for every field of every output
        if type(item) in _SCALARS:
            continue
        if isinstance(item, str):
            if len(item) > MAX_TEXT or not item.isprintable():
                return False
        elif not _strings_ok(item):
            return False
    return True


_SCALARS = frozenset({int, float, bool, type(None), bytes})  # never a Mapping: skip the slow ABC check


def _bounded_strings(value: Any, path: str) -> None:
    if isinstance(value, str):
        if len(value) > MAX_TEXT or not value.isprintable():
            raise ValidationError(f"{path or 'value'}: a string of {len(value)} characters or with control "
                                  f"characters: {_excerpt(value)}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _bounded_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise ValidationError(f"{path}: {len(value)} entries; at most {MAX_ITEMS}")
        for n, item in enumerate(value):
            _bounded_strings(item, f"{path}[{n}]")


def _matches(record: Mapping[str, Any], field: str, shape: re.Pattern[str], max_length: int,
             where: str = "") -> None:
    value = record.get(field)
    if not isinstance(value, str) or not 0 < len(value) <= max_length or shape.fullmatch(value) is None:
        raise ValidationError(f"{where}{field}: {_excerpt(value)} is not a valid {field} "
                              f"(pattern {shape.pattern}, at most {max_length} characters)")


def _between(record: Mapping[str, Any], field: str, low: int, high: int, where: str = "") -> None:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{where}{field}: {_excerpt(value)} is outside {low}..{high}")


def _epoch_ms(value: object) -> object:
    """timestamp-millis decodes as an aware datetime; a record built in code may hold an int."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000) if value.tzinfo is not None else None
    return value


def _excerpt(value: object, limit: int = 40) -> str:
    """A short, escaped view of an untrusted value: never its whole length, never raw bytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
