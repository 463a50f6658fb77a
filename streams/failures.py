"""Failure classification: the one place that decides what kind of failure an exception is.

| kind        | raised by                                                       | goes to          |
|-------------|-----------------------------------------------------------------|------------------|
| `transient` | `connectors.errors.TransientError`: timeouts, connection errors, | retry tier, then |
|             | HTTP 5xx, 429, 408                                               | the DLQ          |
| `permanent` | `connectors.errors.PermanentError` (other 4xx, unusable          | the DLQ at once  |
|             | responses), `ValidationError`, and any other exception raised    |                  |
|             | while processing (a mapping bug will not fix itself)             |                  |
| `poison`    | bytes that do not decode: `WireFormatError`,                     | the DLQ at once, |
|             | `UnknownSchemaError`, `AvroDecodeError`                          | raw bytes kept   |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from connectors.errors import ConnectorError, TransientError
from streams.serde.avro import AvroDecodeError
from streams.serde.registry import UnknownSchemaError
from streams.serde.wire import WireFormatError

MAX_MESSAGE_LENGTH = 500


class FailureKind(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    POISON = "poison"


class ValidationError(ValueError):
    """An event is well-formed Avro but breaks a rule of the pipeline; permanent."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an event could not be processed, as it is written into the error headers."""

    kind: FailureKind
    error_class: str
    message: str
    connector: str | None = None
    status: int | None = None


_POISON = (WireFormatError, UnknownSchemaError, AvroDecodeError)


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised while decoding or processing one event."""
    message = _truncate(str(exc) or type(exc).__name__)
    error_class = type(exc).__name__
    if isinstance(exc, _POISON):
        return Failure(FailureKind.POISON, error_class, message)
    if isinstance(exc, ConnectorError):
        kind = FailureKind.TRANSIENT if isinstance(exc, TransientError) else FailureKind.PERMANENT
        return Failure(kind, error_class, message, exc.connector, exc.status)
    return Failure(FailureKind.PERMANENT, error_class, message)


def _truncate(text: str) -> str:
    text = " ".join(text.split())  # one line: no CR/LF in a header value
    if len(text) <= MAX_MESSAGE_LENGTH:
        return text
    return text[: MAX_MESSAGE_LENGTH - 1] + "…"
