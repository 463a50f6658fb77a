"""The sandbox's payment APIs: accounts, geo-IP and fraud scores, each derived from its input alone.

Deterministic, so tests and the payments example can tell what a checked payment must contain:

* an account id is ``A`` and six digits; the account exists unless its number is divisible by 97
  (``A000097``, ``A000194``, … and ``A000000`` are unknown: the API answers 404);
* a geo lookup takes IPv4 text only (``geo_for`` raises ValueError, the API answers 400);
* a fraud-score request fails (422, or a per-item 422 in a batch) when ``amount_cents`` is not a
  non-negative integer, ``currency`` is not three upper-case letters, ``payment_id`` or
  ``account_id`` is not a string, or ``country`` is neither a string nor null/missing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import date, timedelta
from typing import Any

ACCOUNT_ID = re.compile(r"^A\d{6}$")
UNKNOWN_ACCOUNT_DIVISOR = 97
MAX_FRAUD_BATCH = 100

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lee")
_ACCOUNT_COUNTRIES = ("DE", "FR", "GB", "NL", "SE", "US", "CA", "JP", "BR", "IN")
_CITIES = {
    "DE": ("Berlin", "Hamburg", "Munich"), "FR": ("Paris", "Lyon", "Marseille"),
    "GB": ("London", "Manchester", "Edinburgh"), "NL": ("Amsterdam", "Rotterdam", "Utrecht"),
    "SE": ("Stockholm", "Gothenburg", "Malmo"), "US": ("New York", "Chicago", "San Francisco"),
    "CA": ("Toronto", "Montreal", "Vancouver"), "JP": ("Tokyo", "Osaka", "Sapporo"),
    "BR": ("Sao Paulo", "Rio de Janeiro", "Recife"), "IN": ("Mumbai", "Bengaluru", "Delhi"),
    "AU": ("Sydney", "Melbourne", "Perth"), "SG": ("Singapore",),
}
_GEO_COUNTRIES = tuple(_CITIES)
_USUAL_CURRENCIES = frozenset({"EUR", "USD", "GBP"})
REVIEW_FROM = 50  # scores from here are "review"
BLOCK_FROM = 75  # and from here "block"


def account_exists(account_id: str) -> bool:
    """Whether the accounts API knows this id: well-formed and its number not divisible by 97."""
    return bool(ACCOUNT_ID.match(account_id)) and int(account_id[1:]) % UNKNOWN_ACCOUNT_DIVISOR != 0


def account_for(account_id: str) -> dict[str, str]:
    """The account with this id; KeyError for an id the API answers 404 to (see ``account_exists``)."""
    if not account_exists(account_id):
        raise KeyError(account_id)
    digest = hashlib.sha256(account_id.encode()).digest()
    opened = date(2010, 1, 1) + timedelta(days=int.from_bytes(digest[4:6], "big") % 5000)
    return {
        "account_id": account_id,
        "holder": f"{_FIRST[digest[0] % len(_FIRST)]} {_LAST[digest[1] % len(_LAST)]}",
        "country": _ACCOUNT_COUNTRIES[digest[2] % len(_ACCOUNT_COUNTRIES)],
        "opened": opened.isoformat(),
        "status": "frozen" if digest[3] % 16 == 0 else "active",
    }


def valid_ip(ip: str) -> bool:
    """Whether ``ip`` is IPv4 dotted-quad text (no leading zeros, no IPv6): what the geo API accepts."""
    if not isinstance(ip, str):
        return False
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return True


def geo_for(ip: str) -> dict[str, Any]:
    """Where the geo-IP API places this IPv4 address; ValueError for anything else (the API's 400)."""
    if not valid_ip(ip):
        raise ValueError(f"{ip!r} is not an IPv4 address")
    digest = hashlib.sha256(ip.encode()).digest()
    country = _GEO_COUNTRIES[digest[0] % len(_GEO_COUNTRIES)]
    cities = _CITIES[country]
    return {
        "ip": ip,
        "country": country,
        "city": cities[digest[1] % len(cities)],
        "asn": 1000 + int.from_bytes(digest[2:4], "big") % 64000,
    }


def fraud_problem(item: Any) -> str | None:
    """What is wrong with a fraud-score request (its answer is then a 422), or None when it is valid."""
    if not isinstance(item, dict):
        return "request is not an object"
    amount, currency = item.get("amount_cents"), item.get("currency")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        return "amount_cents must be a non-negative integer"
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        return "currency must be an ISO 4217 code"
    if not isinstance(item.get("payment_id"), str):
        return "payment_id must be a string"
    if not isinstance(item.get("account_id"), str):
        return "account_id must be a string"
    if item.get("country") is not None and not isinstance(item.get("country"), str):
        return "country must be a string or null"
    return None


def fraud_score(item: Any) -> dict[str, Any]:
    """``{"payment_id", "score", "decision"}`` for a valid request; ValueError (why) otherwise.

    score = a 0..59 part from the account id + 1 per 20.00 of amount (at most 30) + 10 for a
    currency other than EUR/USD/GBP + 15 when the country is unknown (null, missing or empty),
    capped at 100; decision is ``allow`` below 50, ``review`` below 75, else ``block``.
    """
    problem = fraud_problem(item)
    if problem is not None:
        raise ValueError(problem)
    base = hashlib.sha256(item["account_id"].encode()).digest()[0] * 60 // 256
    score = base + min(30, item["amount_cents"] // 2_000)
    if item["currency"] not in _USUAL_CURRENCIES:
        score += 10
    if not item.get("country"):
        score += 15
    score = min(100, score)
    decision = "allow" if score < REVIEW_FROM else "review" if score < BLOCK_FROM else "block"
    return {"payment_id": item["payment_id"], "score": score, "decision": decision}
