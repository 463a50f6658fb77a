"""The console's own settings, ``STREAMS_CONSOLE_*`` (the pipeline's come from ``streams.settings``).

Credentials are ``SecretStr``: each may be given as ``<VARIABLE>_FILE`` instead (``streams.secret_files``),
which is how they should be given. Bound to a loopback address, the console needs none; bound to
any other, it refuses to start without a token or a user name and password.
"""

from __future__ import annotations

import ipaddress
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from streams.secret_files import SecretFileSettings


class ConsoleSettings(SecretFileSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMS_CONSOLE_", env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True)

    host: str = Field(default="127.0.0.1", description="Address to bind; any but loopback needs credentials.")
    port: int = Field(default=8088, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    token: SecretStr | None = Field(default=None, description="Bearer token every request must carry "
                                    "(browsers: sign in once with it). Give it as STREAMS_CONSOLE_TOKEN_FILE.")
    username: str | None = Field(default=None, description="Basic-auth user name (with the password).")
    password: SecretStr | None = Field(default=None, description="Basic-auth password. Give it as "
                                       "STREAMS_CONSOLE_PASSWORD_FILE.")
    gone_after: float = Field(default=20.0, gt=0, description="Seconds without an announcement after which a "
                              "worker is shown as gone.")
    refresh: float = Field(default=2.0, gt=0, description="Seconds between the live pages' updates.")
    redact_fields: str = Field(default="", description="Comma-separated field names whose values a dead "
                               "letter's decoded value never shows, at any depth (besides names that look "
                               "secret: password, token, api_key, ...).")
    dlq_rows: int = Field(default=200, ge=1, description="Dead letters listed on a page at most (counts cover all).")
    redrive_rate: float = Field(default=100.0, gt=0, description="Letters per second a redrive replays at most.")

    @model_validator(mode="after")
    def _credentials_are_whole(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("STREAMS_CONSOLE_USERNAME and STREAMS_CONSOLE_PASSWORD(_FILE) go together")
        if not self.has_credentials and not is_loopback(self.host):
            raise ValueError(f"STREAMS_CONSOLE_HOST={self.host} is not a loopback address: set "
                             "STREAMS_CONSOLE_TOKEN_FILE, or STREAMS_CONSOLE_USERNAME and "
                             "STREAMS_CONSOLE_PASSWORD_FILE")
        return self

    @property
    def has_credentials(self) -> bool:
        return self.token is not None or self.password is not None

    @property
    def redacted_fields(self) -> frozenset[str]:
        return frozenset(name.strip().lower() for name in self.redact_fields.split(",") if name.strip())


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
