"""JSON-lines logs: fields, event binding across awaits and tasks, levels, redaction, Faust."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import faust
import pytest

from streams.telemetry import (
    FAUST_WORKER_LOGGING,
    bind_event,
    clear_secrets,
    configure_logging,
    faust_worker,
    parse_level_spec,
    register_secret,
)
from streams.telemetry.logging import _configured_loggers
from streams.telemetry.testing import capture_spans
from streams.telemetry.tracing import consume_span


class LogCapture:
    """configure_logging writing to a buffer; lines() parses what was written."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def configure(self, spec: str = "debug", *, json_lines: bool = True) -> logging.Handler:
        return configure_logging(spec, json=json_lines, stream=self.buffer)

    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    capture = LogCapture()
    capture.configure()
    try:
        yield capture
    finally:
        for name in _configured_loggers:
            logging.getLogger(name).setLevel(logging.NOTSET)
        _configured_loggers.clear()
        # pytest's own capture handlers come and go per test phase; give back only the others
        root.handlers[:] = [h for h in saved_handlers if not type(h).__module__.startswith("_pytest")]
        root.setLevel(saved_level)
        logging.captureWarnings(False)
        clear_secrets()


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


class _Record:
    def __init__(self, headers: dict[str, bytes]) -> None:
        self.topic, self.partition, self.offset, self.headers = "orders", 3, 42, headers


# -- fields ---------------------------------------------------------------------------------------


def test_a_log_line_is_one_json_object_with_the_standard_fields(logs: LogCapture) -> None:
    logging.getLogger("streams.test").info("hello %s", "world")

    [line] = logs.lines()
    assert line["message"] == "hello world"
    assert line["level"] == "info"
    assert line["logger"] == "streams.test"
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    assert "trace_id" not in line and "pipeline" not in line  # nothing current, nothing bound


def test_a_multiline_message_still_makes_one_line(logs: LogCapture) -> None:
    logging.getLogger("streams.test").warning("first\nsecond")

    assert len(logs.text().splitlines()) == 1
    assert logs.lines()[0]["message"] == "first\nsecond"


def test_trace_and_span_ids_come_from_the_current_span(logs: LogCapture) -> None:
    with capture_spans() as spans, consume_span(_Record({}), "orders-enricher"):
        logging.getLogger("streams.test").info("inside")
    [span] = spans.get_finished_spans()

    [line] = logs.lines()
    assert span.context is not None
    assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"


def test_bound_event_fields_appear_and_extra_fields_win(logs: LogCapture) -> None:
    log = logging.getLogger("streams.test")
    with bind_event(pipeline="orders-enricher", topic="orders", partition=3, offset=42):
        log.info("bound")
        with bind_event(event_id="E1"):
            log.info("with id", extra={"offset": 43, "connector": "customers"})
        log.info("id gone again")
    log.info("outside")

    bound, with_id, gone, outside = logs.lines()
    assert {k: bound[k] for k in ("pipeline", "topic", "partition", "offset")} == {
        "pipeline": "orders-enricher", "topic": "orders", "partition": 3, "offset": 42,
    }
    assert with_id["event_id"] == "E1" and with_id["offset"] == 43 and with_id["connector"] == "customers"
    assert "event_id" not in gone and gone["offset"] == 42
    assert "pipeline" not in outside


async def test_bound_fields_survive_awaits_and_reach_child_tasks_without_leaking(logs: LogCapture) -> None:
    log = logging.getLogger("streams.test")

    async def handle(event_id: str, delay: float) -> None:
        with bind_event(event_id=event_id, pipeline="p"):
            await asyncio.sleep(delay)  # the other event runs meanwhile
            log.info("after await")
            await asyncio.create_task(child())

    async def child() -> None:
        await asyncio.sleep(0)
        log.info("in child task")

    await asyncio.gather(handle("A", 0.02), handle("B", 0.0))
    log.info("after both")

    lines = logs.lines()
    by_message: dict[str, list[str]] = {}
    for line in lines:
        by_message.setdefault(line["message"], []).append(line.get("event_id", "-"))
    assert sorted(by_message["after await"]) == ["A", "B"]
    assert sorted(by_message["in child task"]) == ["A", "B"]
    assert by_message["after both"] == ["-"]


def test_exceptions_are_logged_with_their_traceback_in_the_same_line(logs: LogCapture) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("streams.test").exception("failed")

    [line] = logs.lines()
    assert "Traceback" in line["exception"] and "ValueError: bad value" in line["exception"]


def test_unserializable_extra_values_become_strings(logs: LogCapture) -> None:
    logging.getLogger("streams.test").info("x", extra={"thing": object(), "items": (1, "two")})

    [line] = logs.lines()
    assert line["thing"].startswith("<object object") and line["items"] == [1, "two"]


def test_text_mode_is_one_redacted_line_with_the_context(logs: LogCapture) -> None:
    logs.configure("info", json_lines=False)
    with bind_event(topic="orders", offset=7):
        logging.getLogger("streams.test").info("token=abc123 sent")

    text = logs.text()
    assert "abc123" not in text
    assert "streams.test: token=[REDACTED] sent" in text and "topic=orders offset=7" in text


# -- levels ----------------------------------------------------------------------------------------


def test_a_level_spec_sets_the_root_and_named_loggers() -> None:
    assert parse_level_spec("info,aiokafka=warning,streams.engine=debug") == (
        logging.INFO,
        {"aiokafka": logging.WARNING, "streams.engine": logging.DEBUG},
    )
    assert parse_level_spec("") == (logging.INFO, {})
    assert parse_level_spec("ERROR, faust = 10") == (logging.ERROR, {"faust": 10})


@pytest.mark.parametrize("spec", ["loud", "info,aiokafka=verbose", "=debug"])
def test_a_bad_level_spec_is_refused_with_the_spec_named(spec: str) -> None:
    with pytest.raises(ValueError, match="log level spec"):
        parse_level_spec(spec)


def test_levels_apply_per_logger_and_a_new_spec_undoes_the_old_one(logs: LogCapture) -> None:
    logs.configure("info,aiokafka=warning,streams.engine=debug")
    logging.getLogger("aiokafka.consumer").info("dropped")
    logging.getLogger("aiokafka.consumer").warning("kept: aiokafka warning")
    logging.getLogger("streams.engine").debug("kept: engine debug")
    logging.getLogger("streams.other").debug("dropped")
    logging.getLogger("streams.other").info("kept: other info")
    logs.configure("warning")
    logging.getLogger("streams.engine").debug("dropped: engine back to the root's level")

    assert [line["message"] for line in logs.lines()] == [
        "kept: aiokafka warning",
        "kept: engine debug",
        "kept: other info",
    ]


def test_configure_logging_replaces_the_root_handlers(logs: LogCapture) -> None:
    stray = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(stray)
    handler = logs.configure("info")

    assert logging.getLogger().handlers == [handler]


# -- redaction ----------------------------------------------------------------------------------------

SECRETS_IN_MESSAGES = [
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("headers {'Authorization': 'Basic dXNlcjpwYXNz', 'Accept': 'json'}", "dXNlcjpwYXNz"),
    ("calling with bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
    ("body grant_type=client_credentials&client_secret=s3cr3t-v4lue&scope=read", "s3cr3t-v4lue"),
    ("login password=hunter2 user=bob", "hunter2"),
    ("GET https://api.example/v1?api_key=AKIA1234&page=2", "AKIA1234"),
    ("apikey: k-5678-zz", "k-5678-zz"),
    ("X-API-Key: xk-000111", "xk-000111"),
    ("redirect with token=tk_998877 done", "tk_998877"),
    ('token endpoint said {"access_token": "at-424242", "token_type": "Bearer", "expires_in": 60}', "at-424242"),
    ("dsn postgres://app:db-pa55word@db:5432/x", "db-pa55word"),
]


@pytest.mark.parametrize(("message", "secret"), SECRETS_IN_MESSAGES)
def test_secrets_in_the_message_are_redacted(logs: LogCapture, message: str, secret: str) -> None:
    logging.getLogger("streams.test").info(message)

    line = logs.text()
    assert secret not in line
    assert "[REDACTED]" in json.loads(line)["message"]


def test_secrets_in_format_arguments_are_redacted(logs: LogCapture) -> None:
    headers = {"Authorization": "Bearer sekrit-token-1", "Accept": "application/json"}
    logging.getLogger("streams.test").info("sending %s with %r", "password=pw-in-args", headers)

    text = logs.text()
    assert "sekrit-token-1" not in text and "pw-in-args" not in text
    assert "application/json" in text  # the rest survives


def test_extra_fields_are_redacted_by_name_and_by_content(logs: LogCapture) -> None:
    logging.getLogger("streams.test").info(
        "request",
        extra={
            "authorization": "Basic plain-credential",
            "headers": {"X-Api-Key": "key-in-dict", "Proxy-Authorization": "Digest d1g3st", "Accept": "json"},
            "url": "https://api.example/v1?access_token=in-url-123",
            "client_secret": "cs-value",
        },
    )

    text = logs.text()
    for secret in ("plain-credential", "key-in-dict", "d1g3st", "in-url-123", "cs-value"):
        assert secret not in text
    [line] = logs.lines()
    assert line["authorization"] == "[REDACTED]" and line["headers"]["Accept"] == "json"


def test_a_registered_secret_is_redacted_everywhere_even_in_an_extra_field(logs: LogCapture) -> None:
    secret = "Zq9!unusual$value"  # matches no pattern: only registration can catch it
    register_secret(secret)
    logging.getLogger("streams.test").info(
        "config loaded %s", secret, extra={"settings": {"customers_url": f"https://h/?k={secret}"}, "note": secret}
    )

    text = logs.text()
    assert secret not in text
    assert "Zq9%21unusual%24value" not in text  # its URL-encoded form too
    [line] = logs.lines()
    assert line["note"] == "[REDACTED]" and line["message"] == "config loaded [REDACTED]"


def test_a_secret_in_an_exception_traceback_is_redacted(logs: LogCapture) -> None:
    register_secret("registered-in-traceback")

    def fetch_token() -> None:
        raise RuntimeError("token endpoint refused client_secret=cs-in-exception, key registered-in-traceback")

    try:
        try:
            fetch_token()
        except RuntimeError as exc:
            raise ConnectionError("Authorization: Bearer tb-bearer-999 rejected") from exc
    except ConnectionError:
        logging.getLogger("streams.test").exception("auth failed")

    text = logs.text()
    for secret in ("cs-in-exception", "registered-in-traceback", "tb-bearer-999"):
        assert secret not in text
    exception = logs.lines()[0]["exception"]
    assert "RuntimeError" in exception and "ConnectionError" in exception  # the chain is kept


def test_a_secret_in_a_bound_field_is_redacted(logs: LogCapture) -> None:
    register_secret("bound-secret-77")
    with bind_event(event_id="bound-secret-77"):
        logging.getLogger("streams.test").info("x")

    assert "bound-secret-77" not in logs.text()


def test_warnings_go_through_the_same_formatter(logs: LogCapture) -> None:
    import warnings

    warnings.warn("deprecated call with password=warned-pw", UserWarning, stacklevel=1)

    text = logs.text()
    assert "warned-pw" not in text and logs.lines()[0]["logger"] == "py.warnings"


# -- Faust --------------------------------------------------------------------------------------------


async def _first_start(worker: faust.Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    # what mode's Worker does when it starts, minus signal handlers and the app itself
    monkeypatch.setattr(worker, "install_signal_handlers", lambda: None)
    await worker.default_on_first_start()


async def test_the_faust_worker_keeps_our_handler_when_given_faust_worker_logging(
    logs: LogCapture, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    handler = logs.configure("info")
    app = faust.App("telemetry-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    worker = faust.Worker(app, loglevel="info", **FAUST_WORKER_LOGGING)

    await _first_start(worker, monkeypatch)
    logging.getLogger("faust.test").warning("after worker start")

    assert logging.getLogger().handlers == [handler]
    assert logs.lines()[-1]["message"] == "after worker start"


async def test_without_faust_worker_logging_faust_replaces_our_handler(
    logs: LogCapture, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # documents why FAUST_WORKER_LOGGING exists: mode's setup clears the root handlers
    handler = logs.configure("info")
    app = faust.App("telemetry-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    worker = faust.Worker(app, loglevel="info", quiet=True, redirect_stdouts=False, stdout=io.StringIO())

    await _first_start(worker, monkeypatch)

    assert handler not in logging.getLogger().handlers


def test_extra_fields_cannot_replace_the_standard_fields(logs: LogCapture) -> None:
    logging.getLogger("streams.test").info("real", extra={"level": "fake", "logger": "fake", "ts": "fake"})

    [line] = logs.lines()
    assert (line["level"], line["logger"], line["message"]) == ("info", "streams.test", "real")
    assert line["ts"] != "fake"


async def test_the_worker_from_faust_worker_keeps_stdout_clean_and_logs_ready_as_json(
    logs: LogCapture, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = logs.configure("info")
    app = faust.App("telemetry-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    worker = faust_worker(app)

    await _first_start(worker, monkeypatch)
    worker._on_startup_end_spinner()  # what Faust runs once the worker has started

    assert logging.getLogger().handlers == [handler]
    assert capsys.readouterr().out == ""
    assert logs.lines()[-1]["message"].endswith("Ready") and logs.lines()[-1]["logger"] == "faust.worker"
