"""The customer directory the sandbox serves: every well-formed id exists, derived from the id.

Deterministic, so tests and the demo can tell what an enriched record must contain.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta

CUSTOMER_ID = re.compile(r"^C\d{6}$")

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lee")
_TIERS = ("bronze", "silver", "gold", "platinum")
_COUNTRIES = ("DE", "FR", "GB", "NL", "SE", "US", "CA", "JP", "BR", "IN")


def customer_for(customer_id: str) -> dict[str, str] | None:
    """The customer with this id, or None if the id is not a customer id."""
    if not CUSTOMER_ID.match(customer_id):
        return None
    digest = hashlib.sha256(customer_id.encode()).digest()
    since = date(2015, 1, 1) + timedelta(days=int.from_bytes(digest[4:6], "big") % 3650)
    return {
        "customer_id": customer_id,
        "name": f"{_FIRST[digest[0] % len(_FIRST)]} {_LAST[digest[1] % len(_LAST)]}",
        "tier": _TIERS[digest[2] % len(_TIERS)],
        "country": _COUNTRIES[digest[3] % len(_COUNTRIES)],
        "since": since.isoformat(),
    }
