"""The console's settings and guard: credentials off loopback, who a request is from, anti-forgery tokens."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pydantic import ValidationError

from streams.console.guard import CSRF_COOKIE, SESSION_COOKIE, Guard
from streams.console.settings import ConsoleSettings, is_loopback


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False),
                                                ("console.example", False)])
def test_which_addresses_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_bind_needs_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STREAMS_CONSOLE_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="not a loopback address"):
        ConsoleSettings(host="0.0.0.0")
    (tmp_path / "token").write_text("s3cret-token\n")
    monkeypatch.setenv("STREAMS_CONSOLE_TOKEN_FILE", str(tmp_path / "token"))
    settings = ConsoleSettings(host="0.0.0.0")
    assert settings.token is not None and settings.token.get_secret_value() == "s3cret-token"


def test_a_user_name_without_a_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="go together"):
        ConsoleSettings(username="ops")


def _request(headers: dict[str, str] | None = None, method: str = "GET") -> web.Request:
    return make_mocked_request(method, "/", headers={"Host": "127.0.0.1:8088", **(headers or {})})


def test_requests_are_from_whoever_proves_it() -> None:
    token = Guard(ConsoleSettings.model_validate({"token": "tok-123"}))
    assert token.principal(_request()) is None
    assert token.principal(_request({"Authorization": "Bearer tok-12"})) is None
    assert token.principal(_request({"Authorization": "Bearer tok-123"})) == "token"
    session = token.session_for("tok-123")
    assert session is not None and "tok-123" not in session and token.session_for("nope") is None
    assert token.principal(_request({"Cookie": f"{SESSION_COOKIE}={session}"})) == "token"
    assert token.principal(_request({"Cookie": f"{SESSION_COOKIE}={session[:-1]}x"})) is None

    basic = Guard(ConsoleSettings.model_validate({"username": "ops", "password": "pw"}))
    good = base64.b64encode(b"ops:pw").decode()
    bad = base64.b64encode(b"ops:pW").decode()
    assert basic.principal(_request({"Authorization": f"Basic {good}"})) == "basic:ops"
    assert basic.principal(_request({"Authorization": f"Basic {bad}"})) is None
    assert basic.principal(_request({"Authorization": "Basic %%%"})) is None
    assert Guard(ConsoleSettings()).principal(_request()) == "local"


def test_an_anti_forgery_token_holds_for_its_cookie_and_this_console_only() -> None:
    guard = Guard(ConsoleSettings())
    cookie = "a" * 32
    token = guard.csrf_for(cookie)
    with_cookie = {"Cookie": f"{CSRF_COOKIE}={cookie}"}
    assert guard.csrf_ok(_request(with_cookie, "POST"), token)
    assert guard.csrf_ok(_request({**with_cookie, "Origin": "http://127.0.0.1:8088"}, "POST"), token)
    assert not guard.csrf_ok(_request({**with_cookie, "Origin": "http://evil.example"}, "POST"), token)
    assert not guard.csrf_ok(_request(with_cookie, "POST"), "")
    assert not guard.csrf_ok(_request({"Cookie": f"{CSRF_COOKIE}={'b' * 32}"}, "POST"), token)
    assert not guard.csrf_ok(_request(with_cookie, "POST"), Guard(ConsoleSettings()).csrf_for(cookie))
