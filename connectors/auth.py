"""Authentication for connectors: OAuth2 client credentials, API keys, mTLS client certificates.

    auth = OAuth2ClientCredentials(OAuth2Settings(token_url, "pipeline", SecretStr(secret)))
    http = HttpConnector("customers", HttpSettings(base_url=url), auth=auth)

Secrets come only from the settings objects passed in, are held as ``pydantic.SecretStr``
(whose repr is ``'**********'``), and never go into a log line, an exception message or a repr.
An access token is cached until ``refresh_margin`` seconds before it expires; at most one token
request is in flight at a time, however many calls need a token; a 401 from the API replaces
the token once (only if no one else has already) and the call is made again once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import quote_plus

import aiohttp
from pydantic import SecretStr

from connectors.errors import PermanentError, TransientError

log = logging.getLogger("connectors.auth")

_MAX_TOKEN_RESPONSE_BYTES = 64 * 1024


class Auth(Protocol):
    """What the HTTP core asks of an authentication scheme."""

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """Headers to add to a request (may fetch a token through ``session``)."""
        ...

    async def refresh(self, session: aiohttp.ClientSession, rejected: Mapping[str, str]) -> bool:
        """The API answered 401 to a request sent with ``rejected`` headers.

        Return True when new credentials are in place and the request is worth making again.
        """
        ...


@dataclass(frozen=True, slots=True)
class ApiKeySettings:
    """An API key sent in a header on every request."""

    key: SecretStr
    header: str = "X-API-Key"


class ApiKeyAuth:
    """Sends a static API key; a 401 is final (a key cannot be refreshed)."""

    __slots__ = ("settings",)

    def __init__(self, settings: ApiKeySettings) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        return f"<ApiKeyAuth header={self.settings.header}>"

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {self.settings.header: self.settings.key.get_secret_value()}

    async def refresh(self, session: aiohttp.ClientSession, rejected: Mapping[str, str]) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class OAuth2Settings:
    """An OAuth2 client-credentials grant (RFC 6749 §4.4).

    token_url: the token endpoint (configured, never templated, so not subject to the allowlist).
    client_id / client_secret: the client's credentials.
    scope: space-separated scopes to ask for, if any.
    refresh_margin: seconds before expiry a token is replaced (at most half its lifetime).
    client_auth: ``basic`` sends the credentials as HTTP Basic, ``body`` as form fields.
    """

    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    refresh_margin: float = 30.0
    client_auth: Literal["basic", "body"] = "basic"


class OAuth2ClientCredentials:
    """Bearer tokens from a client-credentials grant: cached, refreshed once at a time.

    connector: name used in errors (defaults to ``oauth2``).
    clock: monotonic seconds; tests may pass their own to expire a token without waiting.
    """

    __slots__ = ("_clock", "_expires_at", "_refreshing", "_token", "connector", "settings", "token_requests")

    def __init__(
        self, settings: OAuth2Settings, *, connector: str = "oauth2", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.connector = connector
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._refreshing: asyncio.Task[str] | None = None
        #: token requests made so far (for tests and metrics)
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"<OAuth2ClientCredentials client_id={self.settings.client_id} token_url={self.settings.token_url}>"

    @property
    def token_valid(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._valid_token(session)}"}

    async def refresh(self, session: aiohttp.ClientSession, rejected: Mapping[str, str]) -> bool:
        if self._token is not None and rejected.get("Authorization") == f"Bearer {self._token}":
            self._token = None  # this token is refused; whoever refreshed after it was sent is fine
        await self._valid_token(session)
        return True

    async def _valid_token(self, session: aiohttp.ClientSession) -> str:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._fetch(session))
            self._refreshing.add_done_callback(self._refreshed)
        return await asyncio.shield(self._refreshing)

    def _refreshed(self, task: asyncio.Task[str]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: a refresh whose callers all went away is not "lost"

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        s = self.settings
        form = {"grant_type": "client_credentials"}
        if s.scope:
            form["scope"] = s.scope
        headers = {"Accept": "application/json"}
        if s.client_auth == "basic":  # RFC 6749 §2.3.1: form-encode, then Basic
            pair = f"{quote_plus(s.client_id)}:{quote_plus(s.client_secret.get_secret_value())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": s.client_id, "client_secret": s.client_secret.get_secret_value()}
        self.token_requests += 1
        try:
            async with session.post(
                s.token_url, data=form, allow_redirects=False, headers=headers
            ) as response:
                status = response.status
                if status >= 500 or status in (408, 429):
                    raise TransientError(
                        f"{self.connector}: token endpoint answered HTTP {status}",
                        connector=self.connector,
                        status=status,
                    )
                if status != 200:
                    reason = await _oauth_error(response)
                    asked = f"; asked for scope {s.scope!r}" if s.scope and reason == "invalid_scope" else ""
                    raise PermanentError(
                        f"{self.connector}: token endpoint refused "
                        f"{'the client credentials' if status == 401 else 'the request'} (HTTP {status}"
                        f"{' ' + reason if reason else ''}{asked})",
                        connector=self.connector,
                        status=status,
                    )
                body = b""
                async for chunk in response.content.iter_chunked(16 * 1024):
                    body += chunk
                    if len(body) > _MAX_TOKEN_RESPONSE_BYTES:
                        raise PermanentError(f"{self.connector}: token response too large", connector=self.connector)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(
                f"{self.connector}: token request failed: {type(exc).__name__}", connector=self.connector
            ) from None
        token, lifetime = self._parse(body)
        self._token = token
        self._expires_at = self._clock() + lifetime - min(s.refresh_margin, lifetime / 2)
        log.info("%s: new access token, valid for %.0f s", self.connector, lifetime,
                 extra={"connector": self.connector})
        return token

    def _parse(self, body: bytes) -> tuple[str, float]:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise PermanentError(f"{self.connector}: token response is not a JSON object", connector=self.connector)
        token = document.get("access_token")
        token_type = document.get("token_type", "Bearer")
        lifetime = document.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise PermanentError(
                f"{self.connector}: token response has no bearer access_token", connector=self.connector
            )
        if not isinstance(lifetime, int | float) or lifetime <= 0:
            raise PermanentError(f"{self.connector}: token response has a bad expires_in", connector=self.connector)
        return token, float(lifetime)


async def _oauth_error(response: aiohttp.ClientResponse) -> str:
    """The RFC 6749 §5.2 ``error`` code of a refusal (``invalid_scope``...), if it is a plain word."""
    try:
        body = await response.content.read(4096)
        code = json.loads(body).get("error")
    except (ValueError, AttributeError, aiohttp.ClientError, TimeoutError):
        return ""
    return code if isinstance(code, str) and code.replace("_", "").isalpha() and len(code) <= 40 else ""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS for a connector: whom to trust, and the client certificate for mTLS.

    ca_file: PEM bundle of the CAs to trust (default: the system's).
    cert_file / key_file: the client certificate chain and its key (mTLS); key_password if encrypted.
    check_hostname: verify the server's name against its certificate (keep it on).
    minimum_version: the oldest TLS version accepted; 1.2 at least (older ones are refused here).
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: SecretStr | None = None
    check_hostname: bool = True
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2

    def __post_init__(self) -> None:
        if self.minimum_version < ssl.TLSVersion.TLSv1_2:
            raise ValueError(f"TLS minimum_version must be TLS 1.2 or later, not {self.minimum_version.name}")

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = self.check_hostname
        context.minimum_version = self.minimum_version
        if self.cert_file:
            password = self.key_password.get_secret_value() if self.key_password else None
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=password)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"cannot load the client certificate {self.cert_file}: {type(exc).__name__}"
                ) from None
        return context
