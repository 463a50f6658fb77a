"""Secrets never leave the process through telemetry: one redaction used by logs and spans.

    register_secret(settings.client_secret.get_secret_value())   # exact values, at startup
    redact("GET /x?api_key=abc Authorization: Bearer eyJ...")    # 'GET /x?api_key=[REDACTED] Authorization: [REDACTED]'
    redact_value({"headers": {"Authorization": "Basic dXNlcjpwYXNz"}})  # key-aware, recursive

Two nets, both always on:

- patterns: the value after a sensitive name (``Authorization``, ``Proxy-Authorization``,
  ``client_secret``, ``password``, ``api_key``/``apikey``/``x-api-key``, ``token``,
  ``access_token`` ...) in header, query-string, JSON, dict-repr and ``key=value`` forms, bearer
  tokens anywhere, and the password in ``scheme://user:password@host``;
- exact values registered at runtime (settings register every ``SecretStr``), also in their
  percent-encoded and JSON-escaped spellings, wherever they appear.

Written by hand: the logging libraries offer hooks, not a redactor that knows these forms.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"

# A name whose value is a secret ends with one of these words, whatever comes before it
# (x-api-key, client_secret, db_password, access_token, Proxy-Authorization). The patterns
# match from the word on, so the prefix needs no matching (and costs no backtracking).
_SENSITIVE_NAME = r"(?:authorization|api[_-]?key|apikey|secret|password|passwd|token|cookie)"
_SENSITIVE_KEY = re.compile(rf"^[\w.-]*{_SENSITIVE_NAME}$", re.IGNORECASE)
_AUTH_SCHEMES = r"(?:bearer|basic|digest|token|negotiate|ntlm|dpop|apikey|aws4-hmac-sha256)"

# Each pattern with a cheap first look: a case-sensitive search of the lowercased text, since
# Python's case-insensitive alternation is several times slower and most text has no secret.
_KEYWORD = re.compile(r"authorization|api[_-]?key|apikey|secret|password|passwd|token|cookie")
_PATTERNS: tuple[tuple[re.Pattern[str], re.Pattern[str], str], ...] = (
    # "name": "value" / 'name': 'value' / name="value" (JSON, dict reprs, quoted attributes)
    (
        _KEYWORD,
        re.compile(rf"(?P<key>{_SENSITIVE_NAME}[\"']?\s*[:=]\s*)(?P<q>[\"'])(?:\\.|(?!(?P=q)).)*(?P=q)", re.I),
        rf"\g<key>\g<q>{REDACTED}\g<q>",
    ),
    # name: value / name=value (header lines, query strings, key=value logs); an auth scheme
    # word before the credential goes too
    (
        _KEYWORD,
        re.compile(rf"(?P<key>{_SENSITIVE_NAME}\s*[:=]\s*)(?:{_AUTH_SCHEMES}\s+)?[^\s,;&\"'}}\])>]+", re.I),
        rf"\g<key>{REDACTED}",
    ),
    # a bearer token wherever it stands
    (re.compile("bearer"), re.compile(r"\b(?P<key>bearer\s+)[A-Za-z0-9\-._~+/]+=*", re.I), rf"\g<key>{REDACTED}"),
    # scheme://user:password@host
    (
        re.compile("://"),
        re.compile(r"(?P<key>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", re.I),
        rf"\g<key>{REDACTED}@",
    ),
)

_ANY_HINT = re.compile(f"{_KEYWORD.pattern}|bearer|://")

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Redact this exact value (and its URL-encoded and JSON-escaped forms) from now on.

    Empty values are ignored. Short values are honoured too, at the price of redacting
    ordinary text that happens to contain them: use real secrets.
    """
    global _secret_pattern
    if not value:
        return
    variants = {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}
    with _lock:
        if variants <= _secrets:
            return
        _secrets.update(v for v in variants if v)
        # longest first, so a value never leaves a registered longer one half redacted
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def clear_secrets() -> None:
    """Forget every registered value (for tests)."""
    global _secret_pattern
    with _lock:
        _secrets.clear()
        _secret_pattern = None


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(name: str) -> bool:
    """Whether a field, header or attribute of this name holds a secret (its value is dropped)."""
    return bool(_SENSITIVE_KEY.match(name))


def redact(text: str) -> str:
    """Text with every secret it contains replaced by ``[REDACTED]``."""
    if not text:
        return text
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    lowered = text.lower()
    if _ANY_HINT.search(lowered) is None:
        return text
    for hint, regex, replacement in _PATTERNS:
        if hint.search(lowered) is not None:
            text = regex.sub(replacement, text)
    return text


def redact_value(value: Any, _depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` with secrets redacted: in strings, and under sensitive keys.

    Numbers, booleans and None pass as they are; mappings and sequences are walked; anything
    else becomes its ``str()``, redacted.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if _depth > 8:
        return redact(str(value))
    if isinstance(value, Mapping):
        return {
            redact(str(key)): REDACTED if is_sensitive_key(str(key)) else redact_value(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, _depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", errors="replace"))
    return redact(str(value))
