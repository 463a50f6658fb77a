"""Secrets in the settings: SecretStr, settable from *_FILE, never echoed, none by default."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from streams.api import Api, ApiSettings
from streams.secret_files import secret_field_names
from streams.settings import Settings, register_settings_secrets
from streams.telemetry.redaction import clear_secrets, redact

SECRET_FIELDS = {"kafka_ssl_key_password", "kafka_sasl_password"}  # the APIs' own: streams.api.ApiSettings
CUSTOMERS = Api("customers", "http://127.0.0.1:8080")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("STREAMS_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_every_credential_is_a_secret_str_and_none_has_a_default() -> None:
    assert set(secret_field_names(Settings)) == SECRET_FIELDS
    settings = Settings()
    for name in SECRET_FIELDS:
        assert getattr(settings, name) is None, f"{name} must not have a default"
    for name, field in Settings.model_fields.items():
        if isinstance(field.default, str) and any(w in name for w in ("password", "secret", "token", "key")):
            pytest.fail(f"{name} has a default string value")


def test_a_secret_comes_from_the_file_its_FILE_variable_names_minus_one_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    value = secrets.token_urlsafe(20)
    (tmp_path / "password").write_text(value + "\n")
    monkeypatch.setenv("STREAMS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMS_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("STREAMS_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    (tmp_path / "client-secret").write_text(value + "\n\n")  # only one newline goes
    monkeypatch.setenv("STREAMS_API_CUSTOMERS_CLIENT_ID", "pipeline")
    monkeypatch.setenv("STREAMS_API_CUSTOMERS_CLIENT_SECRET_FILE", str(tmp_path / "client-secret"))
    settings = Settings()
    assert isinstance(settings.kafka_sasl_password, SecretStr)
    assert settings.kafka_sasl_password.get_secret_value() == value
    assert value not in repr(settings) and value not in str(settings) and value not in settings.model_dump_json()
    api = ApiSettings.from_environment(CUSTOMERS)
    assert api.client_secret is not None and api.client_secret.get_secret_value() == value + "\n"
    assert value not in repr(api) and value not in str(api)


def test_FILE_variables_work_from_a_dot_env_file_too(tmp_path: Path) -> None:
    value = secrets.token_urlsafe(20)
    (tmp_path / "secret").write_text(value)
    (tmp_path / ".env").write_text("STREAMS_API_CUSTOMERS_CLIENT_ID=pipeline\n"
                                   f"STREAMS_API_CUSTOMERS_CLIENT_SECRET_FILE={tmp_path / 'secret'}\n")
    api = ApiSettings.from_environment(CUSTOMERS)
    assert api.client_secret is not None and api.client_secret.get_secret_value() == value


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot read"), ("", "is empty"), ("\n", "is empty")])
def test_an_unusable_secret_file_is_named_without_its_contents(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "missing"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("STREAMS_KAFKA_SASL_PASSWORD_FILE", str(path))
    with pytest.raises(SettingsError, match=f"STREAMS_KAFKA_SASL_PASSWORD_FILE: .*{problem}"):
        Settings()


def test_a_secret_set_both_directly_and_as_a_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    value = secrets.token_urlsafe(20)
    (tmp_path / "p").write_text("other")
    monkeypatch.setenv("STREAMS_KAFKA_SASL_PASSWORD", value)
    monkeypatch.setenv("STREAMS_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "p"))
    with pytest.raises(SettingsError) as caught:
        Settings()
    assert "both set" in str(caught.value) and value not in str(caught.value)


def test_validation_errors_name_the_setting_and_never_echo_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    value = "s3cret-" + secrets.token_urlsafe(20)
    monkeypatch.setenv("STREAMS_KAFKA_SASL_PASSWORD", value)  # SASL credentials with PLAINTEXT: refused
    monkeypatch.setenv("STREAMS_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("STREAMS_KAFKA_SASL_MECHANISM", value)  # a secret pasted into the wrong setting
    monkeypatch.setenv("STREAMS_HTTP_TIMEOUT", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    shown = [str(caught.value), repr(caught.value), *(str(e) for e in caught.value.errors(include_input=False)),
             caught.value.json(include_input=False)]
    for text in shown:
        assert value not in text
    locations = {e["loc"] for e in caught.value.errors()}
    assert ("kafka_sasl_mechanism",) in locations and ("http_timeout",) in locations


def test_the_cli_reports_bad_settings_by_name_without_the_values(tmp_path: Path) -> None:
    value = "s3cret-" + secrets.token_urlsafe(20)
    env = {"PATH": "/usr/bin:/bin", "STREAMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "STREAMS_KAFKA_SASL_PASSWORD": value, "STREAMS_KAFKA_SASL_MECHANISM": value}
    done = subprocess.run([sys.executable, "-m", "streams", "topics"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "kafka_sasl_mechanism" in output, output
    assert value not in output


def test_incomplete_security_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    value = secrets.token_urlsafe(20)
    monkeypatch.setenv("STREAMS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMS_KAFKA_SASL_PASSWORD", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "STREAMS_KAFKA_SASL_USERNAME" in str(caught.value) and value not in str(caught.value)


def test_registered_settings_secrets_are_redacted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    value, api_value = secrets.token_urlsafe(20), secrets.token_urlsafe(20)
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="worker",
                        kafka_sasl_password=value)
    monkeypatch.setenv("STREAMS_API_CUSTOMERS_CLIENT_ID", "pipeline")
    monkeypatch.setenv("STREAMS_API_CUSTOMERS_CLIENT_SECRET", api_value)
    try:
        register_settings_secrets(settings)
        ApiSettings.from_environment(CUSTOMERS)  # an API's secrets are registered as they are read
        for secret in (value, api_value):
            assert secret not in redact(f"client_id=pipeline&x={secret}") and "[REDACTED]" in redact(f"x {secret} y")
    finally:
        clear_secrets()
