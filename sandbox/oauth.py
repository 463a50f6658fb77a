"""The sandbox's OAuth2 authorization server: client-credentials grant, opaque bearer tokens."""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Collection, Mapping
from urllib.parse import unquote_plus

from aiohttp import web


class TokenIssuer:
    """Issues bearer tokens to known clients and checks them.

    clients: client id → secret. ttl: seconds a token is valid (``expires_in``).
    scopes: client id → the scopes it may be granted; None grants any scope asked for. A client
        asking for a scope it may not have gets ``400 invalid_scope`` (RFC 6749 §5.2); one asking
        for none gets all of its own.
    """

    def __init__(self, clients: Mapping[str, str], ttl: float,
                 scopes: Mapping[str, Collection[str]] | None = None) -> None:
        self._clients = dict(clients)
        self.ttl = ttl
        self._scopes = None if scopes is None else {client: frozenset(s) for client, s in scopes.items()}
        self._tokens: dict[str, tuple[float, frozenset[str]]] = {}  # token -> (expiry (monotonic), scopes)
        self.issued = 0

    def __repr__(self) -> str:
        return f"<TokenIssuer clients={sorted(self._clients)}>"

    def valid(self, authorization: str | None) -> bool:
        """Is ``Authorization: Bearer <token>`` a live token?"""
        return self._live(authorization) is not None

    def allows(self, authorization: str | None, scope: str) -> bool:
        """Does the live token carry ``scope``? (Always, when scopes are not configured.)"""
        granted = self._live(authorization)
        return granted is not None and (self._scopes is None or scope in granted)

    def _live(self, authorization: str | None) -> frozenset[str] | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        entry = self._tokens.get(authorization[len("Bearer "):])
        return entry[1] if entry is not None and time.monotonic() < entry[0] else None

    def revoke_all(self) -> None:
        self._tokens.clear()

    async def token_endpoint(self, request: web.Request) -> web.Response:
        """``POST /oauth/token``: RFC 6749 §4.4, client auth by HTTP Basic or form fields."""
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        client_id, secret = _client_credentials(request.headers.get("Authorization"), form)
        known = self._clients.get(client_id or "")
        if known is None or secret is None or not hmac.compare_digest(known.encode(), secret.encode()):
            return web.json_response(
                {"error": "invalid_client"}, status=401, headers={"WWW-Authenticate": 'Basic realm="sandbox"'}
            )
        scope = form.get("scope")
        asked = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        allowed = None if self._scopes is None else self._scopes.get(client_id or "", frozenset())
        if allowed is not None and not asked <= allowed:
            return web.json_response({"error": "invalid_scope"}, status=400)
        granted = asked or (allowed or frozenset())
        now = time.monotonic()
        self._tokens = {t: e for t, e in self._tokens.items() if e[0] > now}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (now + self.ttl, granted)
        self.issued += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": max(1, round(self.ttl)),
             "scope": " ".join(sorted(granted))},
            headers={"Cache-Control": "no-store"},
        )


def _client_credentials(authorization: str | None, form: Mapping[str, object]) -> tuple[str | None, str | None]:
    if authorization and authorization.startswith("Basic "):
        try:
            decoded = base64.b64decode(authorization[len("Basic "):], validate=True).decode()
        except ValueError:
            return None, None
        client_id, _, secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    return (form_id if isinstance(form_id, str) else None, form_secret if isinstance(form_secret, str) else None)


def unauthorized() -> web.Response:
    return web.json_response(
        {"error": "invalid_token"}, status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def insufficient_scope(scope: str) -> web.Response:
    """RFC 6750 §3.1: the token is fine, but it does not carry the scope this call needs."""
    return web.json_response(
        {"error": "insufficient_scope", "scope": scope}, status=403,
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
    )
