"""Logs as JSON lines, one event per line, correlated with traces and events, secrets redacted.

    configure_logging("info,aiokafka=warning,streams.engine=debug")
    faust_worker(app).execute_from_commandline()            # a Worker that keeps ours in place
    with bind_event(pipeline="orders-enricher", topic="orders", partition=3, offset=42):
        log.info("decoded", extra={"event_id": "E1"})

Each line has ``ts``, ``level``, ``logger``, ``message``; ``trace_id`` and ``span_id`` when a
span is current; ``pipeline``, ``topic``, ``partition``, ``offset``, ``event_id`` when bound
(``bind_event``, a context variable, so it follows the event across awaits and into the tasks
it starts) or given as ``extra``; other ``extra`` fields; ``exception`` with the traceback.
Every string that goes out passes ``redaction.redact`` (keys named like secrets lose their
value), whatever the caller logged.

Written on the standard library's ``logging``: Faust, mode and aiokafka log there, and a JSON
formatter is thirty lines; a structured-logging library would not change what they emit.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import IO, Any, Final

from opentelemetry import trace

from streams.telemetry.redaction import REDACTED, is_sensitive_key, redact, redact_value
from streams.telemetry.repeats import RepeatedErrors

__all__ = [
    "EVENT_FIELDS",
    "FAUST_WORKER_LOGGING",
    "JsonFormatter",
    "TextFormatter",
    "bind_event",
    "bound_event",
    "configure_logging",
    "faust_worker",
    "parse_level_spec",
]

#: What ``faust.Worker(...)`` must be given so that ``configure_logging`` stays in force.
#: mode's ``Worker`` (under Faust's) calls ``mode.utils.logging.setup_logging`` when it first
#: starts, which clears the root handlers and installs a colour text handler on stdout; with
#: ``override_logging=False`` it touches nothing (``redirect_stdouts`` is applied inside that
#: same setup). ``quiet`` keeps Faust's own prints (" OK ^" when started) off stdout.
#: ``loglevel`` is then unused: the levels are ``configure_logging``'s. ``faust_worker`` also
#: turns the spinner off, which these arguments cannot.
FAUST_WORKER_LOGGING: Final[Mapping[str, Any]] = MappingProxyType(
    {"override_logging": False, "redirect_stdouts": False, "quiet": True}
)

#: The event coordinates a log line carries when known, in this order.
EVENT_FIELDS: Final = ("pipeline", "topic", "partition", "offset", "event_id")

_event: ContextVar[Mapping[str, Any]] = ContextVar("streams_log_event", default=MappingProxyType({}))

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_LEVELS: Final = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "notset": logging.NOTSET,
}

# Loggers whose level the last configure_logging set, reset by the next one.
_configured_loggers: set[str] = set()


def bind_event(**fields: Any) -> AbstractContextManager[Mapping[str, Any]]:
    """Add fields (``pipeline``, ``topic``, ``partition``, ``offset``, ``event_id``, ...) to every
    log line written inside the block, in this task and the tasks it starts.

    Nested blocks add to the outer one (bind the coordinates first, ``event_id`` once decoded);
    ``None`` values are skipped. The fields are gone again when the block ends.
    """
    return _Binding(fields)


class _Binding(AbstractContextManager[Mapping[str, Any]]):
    """``bind_event``'s block: a plain context manager, not a generator (two per event)."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields
        self._token: Token[Mapping[str, Any]] | None = None

    def __enter__(self) -> Mapping[str, Any]:
        merged = dict(_event.get())
        for key, value in self._fields.items():
            if value is not None:
                merged[key] = value
        bound = MappingProxyType(merged)
        self._token = _event.set(bound)
        return bound

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            _event.reset(self._token)
            self._token = None


def bound_event() -> Mapping[str, Any]:
    """The fields ``bind_event`` has bound here (read-only)."""
    return _event.get()


def faust_worker(app: Any, **kwargs: Any) -> Any:
    """A ``faust.Worker`` for ``app`` that leaves logging to ``configure_logging`` (call that first).

    Passes ``FAUST_WORKER_LOGGING`` (``kwargs`` may add to it) and turns the progress spinner
    off: its ``finish()`` writes a backspace and a cursor escape to stdout even when stdout is
    not a terminal, which would glue bytes to the front of the next JSON line.
    """
    import faust

    worker = faust.Worker(app, **{**FAUST_WORKER_LOGGING, **kwargs})
    worker.spinner = None
    return worker


def parse_level_spec(spec: str) -> tuple[int, dict[str, int]]:
    """``"info,aiokafka=warning,streams.engine=debug"`` → (root level, {logger: level}).

    A bare level sets the root (default ``info``); ``name=level`` sets one logger and its
    children. Levels are names (debug, info, warning, error, critical) or numbers.
    """
    root = logging.INFO
    loggers: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, level_text = part.rpartition("=")
        level = _level(level_text.strip(), spec)
        if not sep:
            root = level
        elif not name.strip():
            raise ValueError(f"log level spec {spec!r}: {part!r} names no logger")
        else:
            loggers[name.strip()] = level
    return root, loggers


def _level(text: str, spec: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return _LEVELS[text.lower()]
    except KeyError:
        raise ValueError(
            f"log level spec {spec!r}: unknown level {text!r} (use debug, info, warning, error or critical)"
        ) from None


REPEAT_INTERVAL = 10.0  # seconds between two summary lines of one repeated client error
repeated_errors: RepeatedErrors | None = None  # the filter of the last configure_logging


def configure_logging(level_spec: str = "info", *, json: bool = True, stream: IO[str] | None = None) -> logging.Handler:
    """Make the root logger write one redacted line per event to ``stream`` (stderr).

    Replaces the root's handlers, sets the levels of ``level_spec`` (undoing those of an
    earlier call), lets a Kafka client's repeated errors through once per kind and interval
    (``streams.telemetry.repeats``) and routes ``warnings`` through logging. Call it before creating the Faust
    worker, and pass ``FAUST_WORKER_LOGGING`` to ``faust.Worker`` so it stays in force.
    Returns the handler it installed.
    """
    root_level, levels = parse_level_spec(level_spec)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    global repeated_errors
    if repeated_errors is not None:
        repeated_errors.close()
    repeated_errors = RepeatedErrors(interval=REPEAT_INTERVAL)
    repeated_errors.attach(handler)  # a client's errors that repeat: the first, then a count per interval
    root.setLevel(root_level)
    for name in _configured_loggers - set(levels):
        logging.getLogger(name).setLevel(logging.NOTSET)
    _configured_loggers.clear()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
        _configured_loggers.add(name)
    logging.captureWarnings(True)
    return handler


def _iso_utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, every string redacted; never raises."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return json.dumps(self.fields(record), ensure_ascii=False, default=str)
        except Exception as exc:  # noqa: BLE001 - a log line must never break the caller
            return json.dumps(
                {
                    "ts": _iso_utc(record.created),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "message": redact(f"unformattable log record: {type(exc).__name__}: {exc}"),
                }
            )

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as the dict that is serialized (redacted)."""
        out: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(_message(record)),
        }
        for key, value in _correlation(record).items():
            out.setdefault(key, value)  # an extra named ts, level, logger or message cannot replace those
        exception = _exception_text(self, record)
        if exception:
            out["exception"] = exception
        return out


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, the same fields and the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            context = " ".join(f"{key}={value}" for key, value in _correlation(record).items())
            line = f"{_iso_utc(record.created)} {record.levelname:<7} {record.name}: {redact(_message(record))}"
            if context:
                line = f"{line} [{context}]"
            exception = _exception_text(self, record)
            return f"{line}\n{exception}" if exception else line
        except Exception as exc:  # noqa: BLE001 - a log line must never break the caller
            return redact(f"{record.name}: unformattable log record: {type(exc).__name__}: {exc}")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - bad format args: keep what we have, as logging would not
        return f"{record.msg!s} % {record.args!r}"


def _correlation(record: logging.LogRecord) -> dict[str, Any]:
    """trace/span ids, bound event fields, then ``extra`` fields (which win), all redacted."""
    out: dict[str, Any] = {}
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        out["trace_id"] = trace.format_trace_id(context.trace_id)
        out["span_id"] = trace.format_span_id(context.span_id)
    bound = _event.get()
    extras = {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES}
    for key in EVENT_FIELDS:
        if key in extras:
            out[key] = extras.pop(key)
        elif key in bound:
            out[key] = bound[key]
    for key, value in bound.items():
        out.setdefault(key, value)
    out.update(extras)
    return {
        redact(str(key)): REDACTED if is_sensitive_key(str(key)) else redact_value(value) for key, value in out.items()
    }


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts: list[str] = []
    if record.exc_info and record.exc_info[0] is not None:
        # formatted afresh (not record.exc_text, which another handler may have cached)
        parts.append("".join(traceback.format_exception(*record.exc_info)).rstrip())
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return redact("\n".join(parts))
