"""Who may use the console, and what a request must carry to change anything.

Authentication, when credentials are configured (always, off loopback; ``ConsoleSettings``):

- a token: ``Authorization: Bearer <token>`` (scripts), or a browser signs in once at ``/login``
  and gets a session cookie (HttpOnly, SameSite=Strict) holding an HMAC of a random nonce under
  the token, never the token itself;
- a user name and password: HTTP Basic (the browser asks).

Cross-site requests: every state-changing request is a POST carrying the form field ``csrf``,
an HMAC under a key of this process of the client's random ``streams_console_csrf`` cookie
(SameSite=Strict); a POST without it, with another, or with an ``Origin`` that is not the
console's own is refused (403). Every answer forbids framing and caching and allows scripts
from the console only (Content-Security-Policy).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from streams.console.settings import ConsoleSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSRF_COOKIE = "streams_console_csrf"
SESSION_COOKIE = "streams_console_session"
PRINCIPAL: web.RequestKey[str] = web.RequestKey("streams.console.principal", str)
CSRF_TOKEN: web.RequestKey[str] = web.RequestKey("streams.console.csrf", str)
OPEN_PATHS = frozenset({"/login", "/static/console.css", "/static/console.js"})

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null" with forms
    "Cache-Control": "no-store",
}


class Guard:
    def __init__(self, settings: ConsoleSettings) -> None:
        self._token = settings.token.get_secret_value() if settings.token is not None else None
        self._username = settings.username
        self._password = settings.password.get_secret_value() if settings.password is not None else None
        self._key = secrets.token_bytes(32)  # CSRF tokens hold for this process only

    # -- authentication ----------------------------------------------------------------------

    def principal(self, request: web.Request) -> str | None:
        """Who the request is from (``basic:<user>``, ``token``, ``local``), None if not authenticated."""
        if self._token is None and self._password is None:
            return "local"
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if self._token is not None:
            if scheme.lower() == "bearer" and _same(credentials.strip(), self._token):
                return "token"
            if self._valid_session(request.cookies.get(SESSION_COOKIE, "")):
                return "token"
        if self._password is not None and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if _same(user, self._username or "") & _same(password, self._password):
                return f"basic:{user}"
        return None

    def session_for(self, token: str) -> str | None:
        """A session cookie's value for a browser that signed in with ``token``; None if it is wrong."""
        if self._token is None or not _same(token, self._token):
            return None
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._mac(self._token.encode(), nonce)}"

    def _valid_session(self, cookie: str) -> bool:
        nonce, _, mac = cookie.partition(".")
        return bool(nonce and mac and self._token is not None and _same(mac, self._mac(self._token.encode(), nonce)))

    @property
    def uses_basic(self) -> bool:
        return self._password is not None

    # -- cross-site requests ------------------------------------------------------------------

    def csrf_for(self, cookie: str) -> str:
        return self._mac(self._key, cookie)

    def csrf_ok(self, request: web.Request, submitted: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not submitted or not _same(submitted, self.csrf_for(cookie)):
            return False
        # The token is the protection; an Origin naming another site is refused besides. Browsers
        # send "null" where they hide the origin (privacy settings): the token alone decides then.
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            return urlsplit(origin).netloc == request.host
        return True

    @staticmethod
    def _mac(key: bytes, text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    # -- the middleware ------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = cookie is None or len(cookie) != 32
        if fresh:
            cookie = secrets.token_hex(16)
        request[CSRF_TOKEN] = self.csrf_for(cookie or "")
        response: web.StreamResponse
        principal = self.principal(request)
        if principal is None and request.path not in OPEN_PATHS:
            response = self._unauthorized(request)
        else:
            request[PRINCIPAL] = principal or "anonymous"
            if request.method == "POST":
                form = await request.post()
                submitted = form.get("csrf")
                if not isinstance(submitted, str) or not self.csrf_ok(request, submitted):
                    response = web.Response(status=403, text="refused: the form's anti-forgery token is missing or "
                                            "wrong (reload the page and try again)")
                    return _finish(response, cookie if fresh else None)
            elif request.method not in ("GET", "HEAD"):
                response = web.Response(status=405, text="only GET and POST")
                return _finish(response, cookie if fresh else None)
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # redirects and errors the handlers raise
                _finish(exc, cookie if fresh else None)
                raise
        return _finish(response, cookie if fresh else None)

    def _unauthorized(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Accept", "").startswith("text/html") and self._token is not None:
            return web.Response(status=303, headers={"Location": "/login"})  # a browser signs in
        headers = {"WWW-Authenticate": 'Basic realm="streams console", charset="UTF-8"'} if self.uses_basic else {}
        return web.Response(status=401, text="authentication required", headers=headers)


def _finish(response: web.StreamResponse, new_cookie: str | None) -> web.StreamResponse:
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if new_cookie is not None:
        response.set_cookie(CSRF_COOKIE, new_cookie, httponly=True, samesite="Strict", path="/")
    return response


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
