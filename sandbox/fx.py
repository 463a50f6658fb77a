"""The sandbox's FX-rate API: fixed rates between a handful of currencies."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

_PER_USD = {
    "USD": Decimal("1"), "EUR": Decimal("0.92"), "GBP": Decimal("0.79"), "JPY": Decimal("151.2"),
    "CHF": Decimal("0.88"), "CAD": Decimal("1.36"), "SEK": Decimal("10.5"), "BRL": Decimal("5.01"),
    "INR": Decimal("83.2"), "NOK": Decimal("10.7"),
}


def rates_for(base: str) -> dict[str, Any] | None:
    """Rates from ``base`` to every other currency, as decimal strings; None for unknown bases."""
    if base not in _PER_USD:
        return None
    rates = {
        quote: str((per_usd / _PER_USD[base]).quantize(Decimal("0.000001")))
        for quote, per_usd in _PER_USD.items() if quote != base
    }
    return {"base": base, "as_of": datetime.now(UTC).date().isoformat(), "rates": rates}
