"""Secrets read from files: every ``SecretStr`` setting ``X`` may instead be given as ``X_FILE``.

    STREAMS_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka-password   # instead of ..._PASSWORD=...

One pydantic-settings source, generic over the model: it finds the ``SecretStr`` fields and, for
each, reads the file a ``<ENV NAME>_FILE`` variable names (the environment, or a ``.env`` file
through the dotenv source). The contents lose one trailing newline (``echo`` and editors add
one) and nothing else. Setting both ``X`` and ``X_FILE`` in the same place is refused: one of
them would be silently ignored. Errors name the variable and the path, never the contents.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsError
from pydantic_settings.sources import DotEnvSettingsSource

MAX_SECRET_FILE_BYTES = 64 * 1024  # a secret is a password or a key, not a data file


def is_secret_field(field: FieldInfo) -> bool:
    """Whether the field holds a ``SecretStr`` (``SecretStr`` or ``SecretStr | None``)."""
    annotation = field.annotation
    if annotation is SecretStr:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return SecretStr in typing.get_args(annotation)
    return False


def secret_field_names(model: type[BaseSettings]) -> list[str]:
    return [name for name, field in model.model_fields.items() if is_secret_field(field)]


class SecretFileSource(PydanticBaseSettingsSource):
    """``<ENV NAME>_FILE`` variables for the model's ``SecretStr`` fields.

    variables: where to look, names as the settings see them (lower-cased unless the model is
        case-sensitive): ``os.environ``, or the variables a dotenv source read.
    where: how to call that place in errors (``environment``, ``.env``).
    """

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str | None], where: str) -> None:
        super().__init__(settings_cls)
        self._case_sensitive = bool(self.config.get("case_sensitive", False))
        self._variables = {self._norm(k): v for k, v in variables.items()}
        self._where = where

    def _norm(self, name: str) -> str:
        return name if self._case_sensitive else name.lower()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Not used: __call__ does the work for every secret field at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        prefix = str(self.config.get("env_prefix", ""))
        for name in secret_field_names(self.settings_cls):
            env_name = self._norm(prefix + name)
            path = self._variables.get(env_name + self._norm("_FILE"))
            if not path:
                continue
            shown = (prefix + name).upper()
            if self._variables.get(env_name):
                raise SettingsError(f"{shown} and {shown}_FILE are both set in the {self._where}; set one")
            values[name] = SecretStr(_read_secret(Path(path), f"{shown}_FILE"))
        return values


def _read_secret(path: Path, variable: str) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise SettingsError(f"{variable}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes; not a secret file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}: {path} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SettingsError(f"{variable}: {path} is empty")
    return text


class SecretFileSettings(BaseSettings):
    """Settings whose secrets may come from files: arguments first, then the environment (``X``,
    then ``X_FILE``), then a ``.env`` file (likewise), then pydantic's secrets directory."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        dotenv_variables = dotenv_settings.env_vars if isinstance(dotenv_settings, DotEnvSettingsSource) else {}
        return (init_settings, env_settings, SecretFileSource(settings_cls, environment(), "environment"),
                dotenv_settings, SecretFileSource(settings_cls, dotenv_variables, ".env file"), file_secret_settings)


def environment() -> Mapping[str, str]:
    return os.environ


def read_secret_file(path: str | Path, variable: str) -> str:
    """The secret in the file a ``*_FILE`` variable names (one trailing newline dropped); the
    error names ``variable`` and never the contents."""
    return _read_secret(Path(path), variable)
