"""The sandbox's OAuth2 authorization server: client-credentials grant, opaque bearer tokens."""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import unquote_plus

from aiohttp import web


class TokenIssuer:
    """Issues bearer tokens to known clients and checks them.

    clients: client id → secret. ttl: seconds a token is valid (``expires_in``).
    """

    def __init__(self, clients: Mapping[str, str], ttl: float) -> None:
        self._clients = dict(clients)
        self.ttl = ttl
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.issued = 0

    def __repr__(self) -> str:
        return f"<TokenIssuer clients={sorted(self._clients)}>"

    def valid(self, authorization: str | None) -> bool:
        """Is ``Authorization: Bearer <token>`` a live token?"""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        expiry = self._tokens.get(authorization[len("Bearer "):])
        return expiry is not None and time.monotonic() < expiry

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
        now = time.monotonic()
        self._tokens = {t: e for t, e in self._tokens.items() if e > now}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + self.ttl
        self.issued += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": max(1, round(self.ttl))},
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
