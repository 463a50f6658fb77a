"""Traces: W3C context through Kafka and HTTP headers, consumer/client/producer spans, retry links."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import redirect_stderr
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streams.names import Header
from streams.telemetry import (
    TelemetryConfigError,
    clear_secrets,
    configure_tracing,
    connector_span,
    consume_span,
    current_trace_id,
    extract_context,
    inject_headers,
    inject_http_headers,
    produce_span,
    register_secret,
    safe_attributes,
    set_event_outcome,
    set_http_status,
)
from streams.telemetry.testing import capture_spans
from streams.telemetry.tracing import use_tracer_provider

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


@dataclass
class Record:
    headers: dict[str, bytes] = field(default_factory=dict)
    topic: str = "orders"
    partition: int = 3
    offset: int = 42


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with capture_spans() as exporter:
        yield exporter


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


def _only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


# -- propagation -------------------------------------------------------------------------------------


def test_traceparent_round_trips_through_kafka_header_pairs(spans: InMemorySpanExporter) -> None:
    headers: list[tuple[str, bytes]] = [(Header.EVENT_ID, b"E1")]
    with produce_span("orders.enriched", pipeline="p"):
        inject_headers(headers)
        sent = trace.get_current_span().get_span_context()

    received = trace.get_current_span(extract_context(dict(headers))).get_span_context()
    assert (received.trace_id, received.span_id) == (sent.trace_id, sent.span_id)
    assert received.is_remote and received.trace_flags.sampled
    assert headers[0] == (Header.EVENT_ID, b"E1")
    assert all(isinstance(value, bytes) for _, value in headers)


def test_injection_replaces_trace_headers_copied_from_the_input(spans: InMemorySpanExporter) -> None:
    headers: list[tuple[str, bytes]] = [(Header.TRACEPARENT, TRACEPARENT), (Header.TRACESTATE, b"old=1")]
    with produce_span("orders.enriched", pipeline="p"):
        inject_headers(headers)
        expected = [current_trace_id(), f"{trace.get_current_span().get_span_context().span_id:016x}"]

    assert [name for name, _ in headers] == [Header.TRACEPARENT]  # the old tracestate went with it
    assert headers[0][1].decode().split("-")[1:3] == expected


def test_injection_into_a_dict_of_headers(spans: InMemorySpanExporter) -> None:
    headers = {Header.TRACEPARENT: TRACEPARENT, "other": b"x"}
    with produce_span("t", pipeline="p"):
        inject_headers(headers)

    assert headers["other"] == b"x" and headers[Header.TRACEPARENT] != TRACEPARENT


def test_tracestate_is_carried_with_traceparent() -> None:
    context = extract_context({Header.TRACEPARENT: TRACEPARENT, Header.TRACESTATE: b"vendor=abc"})
    headers: list[tuple[str, bytes]] = []
    inject_headers(headers, context)

    assert dict(headers) == {Header.TRACEPARENT: TRACEPARENT, Header.TRACESTATE: b"vendor=abc"}


@pytest.mark.parametrize("value", [b"garbage", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", b"\xff\xfe"])
def test_a_malformed_or_missing_traceparent_extracts_to_no_context(value: bytes) -> None:
    for headers in ({Header.TRACEPARENT: value}, {}):
        assert not trace.get_current_span(extract_context(headers)).get_span_context().is_valid


def test_outside_a_span_nothing_is_injected() -> None:
    headers: list[tuple[str, bytes]] = []
    inject_headers(headers)
    assert headers == [] and current_trace_id() is None


# -- consumer spans ------------------------------------------------------------------------------------


def test_a_first_attempt_is_a_child_of_the_producer_context(spans: InMemorySpanExporter) -> None:
    record = Record({Header.TRACEPARENT: TRACEPARENT, Header.EVENT_ID: b"E1", Header.ATTEMPT: b"1"})
    with consume_span(record, "orders-enricher"):
        pass

    span = _only(spans, "process orders")
    assert span.kind is SpanKind.CONSUMER
    assert _ids(span)[0] == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID
    assert not span.links
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "orders",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 42,
        "messaging.consumer.group.name": "orders-enricher",
        "messaging.message.id": "E1",
        "streams.pipeline": "orders-enricher",
        "streams.attempt": 1,
    }


def test_a_retry_hop_starts_a_new_trace_linked_to_the_original(spans: InMemorySpanExporter) -> None:
    record = Record({Header.TRACEPARENT: TRACEPARENT, Header.ATTEMPT: b"3"}, topic="orders-enricher.retry.1m")
    with consume_span(record, "orders-enricher"):
        pass

    span = _only(spans, "process orders-enricher.retry.1m")
    assert span.parent is None
    assert _ids(span)[0] != TRACE_ID
    [link] = span.links
    assert f"{link.context.trace_id:032x}" == TRACE_ID and f"{link.context.span_id:016x}" == PARENT_ID
    assert (link.attributes or {})["streams.attempt"] == 2
    assert (span.attributes or {})["streams.attempt"] == 3


def test_the_chain_across_hops_is_walkable_through_links(spans: InMemorySpanExporter) -> None:
    # attempt 1 consumes, then produces to a retry tier; attempt 2 consumes that record
    first = Record({Header.TRACEPARENT: TRACEPARENT})
    retry_headers: list[tuple[str, bytes]] = [(Header.ATTEMPT, b"2")]
    with consume_span(first, "p"), produce_span("p.retry.5s", pipeline="p"):
        inject_headers(retry_headers)
    with consume_span(Record(dict(retry_headers), topic="p.retry.5s"), "p"):
        pass

    produced = _only(spans, "send p.retry.5s")
    second = _only(spans, "process p.retry.5s")
    assert _ids(produced)[0] == TRACE_ID  # the produce belongs to the first attempt's trace
    [link] = second.links
    assert produced.context is not None and link.context.span_id == produced.context.span_id


def test_a_consumer_span_never_nests_under_the_current_span(spans: InMemorySpanExporter) -> None:
    with produce_span("unrelated", pipeline="p"), consume_span(Record(), "p"):
        pass

    span = _only(spans, "process orders")
    assert span.parent is None


def test_the_outcome_is_recorded_and_a_dead_letter_marks_the_span_failed(spans: InMemorySpanExporter) -> None:
    with consume_span(Record(), "p") as span:
        set_event_outcome(span, "dead_lettered", error_kind="poison", event_id="E9")

    finished = _only(spans, "process orders")
    assert finished.status.status_code is StatusCode.ERROR
    attributes = finished.attributes or {}
    assert attributes["streams.outcome"] == "dead_lettered" and attributes["streams.error.kind"] == "poison"


def test_an_exception_leaving_a_span_is_recorded_redacted(spans: InMemorySpanExporter) -> None:
    register_secret("registered-span-secret")
    with pytest.raises(RuntimeError), consume_span(Record(), "p"):
        raise RuntimeError("refused client_secret=cs-span-1 and registered-span-secret")

    span = _only(spans, "process orders")
    assert span.status.status_code is StatusCode.ERROR
    [event] = span.events
    exported = str(dict(event.attributes or {})) + str(span.status.description)
    assert event.name == "exception" and "RuntimeError" in exported
    assert "cs-span-1" not in exported and "registered-span-secret" not in exported


# -- connector and producer spans -------------------------------------------------------------------------


def test_a_connector_span_injects_a_traceparent_with_the_current_trace_id(spans: InMemorySpanExporter) -> None:
    url = "http://127.0.0.1:8080/v1/customers/C1"
    headers: dict[str, str] = {"Accept": "application/json"}
    with (
        consume_span(Record({Header.TRACEPARENT: TRACEPARENT}), "p"),
        connector_span("customers", "get", url, route="/v1/customers/{id}") as call,
    ):
        inject_http_headers(headers)
        current = trace.get_current_span().get_span_context()
        set_http_status(call, 200)

    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert trace_id == f"{current.trace_id:032x}" == TRACE_ID
    client = _only(spans, "GET /v1/customers/{id}")
    assert client.kind is SpanKind.CLIENT and span_id == _ids(client)[1]
    consume = _only(spans, "process orders")
    assert client.parent is not None and consume.context is not None
    assert client.parent.span_id == consume.context.span_id
    attributes = client.attributes or {}
    assert attributes["http.request.method"] == "GET" and attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == 8080
    assert attributes["streams.connector"] == "customers"


def test_a_connector_span_never_records_secrets_from_the_url(spans: InMemorySpanExporter) -> None:
    with connector_span("risk", "POST", "https://user:pw-in-url@risk.example/v1/score?api_key=k-in-query", attempt=2):
        pass

    span = _only(spans, "POST")
    url = str((span.attributes or {})["url.full"])
    assert "pw-in-url" not in url and "k-in-query" not in url and "user" not in url
    assert url.startswith("https://[REDACTED]@risk.example/v1/score?api_key=[REDACTED]")
    assert (span.attributes or {})["http.request.resend_count"] == 1


def test_a_failed_http_status_marks_the_client_span_failed(spans: InMemorySpanExporter) -> None:
    with connector_span("customers", "GET", "http://h/x") as span:
        set_http_status(span, 503)

    finished = _only(spans, "GET")
    assert finished.status.status_code is StatusCode.ERROR and (finished.attributes or {})["error.type"] == "503"


def test_a_produce_span_is_a_child_of_the_event_span(spans: InMemorySpanExporter) -> None:
    with consume_span(Record(), "p"), produce_span("orders.enriched", pipeline="p", partition=1, event_id="E1"):
        pass

    produce, consume = _only(spans, "send orders.enriched"), _only(spans, "process orders")
    assert produce.kind is SpanKind.PRODUCER
    assert produce.parent is not None and consume.context is not None
    assert produce.parent.span_id == consume.context.span_id
    assert (produce.attributes or {})["messaging.destination.partition.id"] == "1"


# -- attributes ---------------------------------------------------------------------------------------


def test_safe_attributes_redacts_names_and_contents() -> None:
    register_secret("exact-attr-secret")
    attributes = safe_attributes(
        {
            "http.request.header.authorization": ["Bearer abc"],
            "api_key": "k",
            "note": "uses exact-attr-secret",
            "list": ["password=p1", "ok"],
            "count": 3,
            "missing": None,
            "object": object(),
        }
    )

    assert attributes["http.request.header.authorization"] == "[REDACTED]"
    assert attributes["api_key"] == "[REDACTED]"
    assert attributes["note"] == "uses [REDACTED]"
    assert attributes["list"] == ("password=[REDACTED]", "ok")
    assert attributes["count"] == 3 and "missing" not in attributes
    assert isinstance(attributes["object"], str)


def test_attributes_set_directly_are_redacted_on_export(spans: InMemorySpanExporter) -> None:
    with consume_span(Record(), "p") as span:
        span.set_attribute("debug.request", "Authorization: Bearer direct-set-token")
        span.add_event("retrying", {"detail": "password=event-pw"})

    exported = _only(spans, "process orders")
    assert "direct-set-token" not in str(exported.attributes) and "event-pw" not in str(exported.events[0].attributes)


# -- configuration -----------------------------------------------------------------------------------


@pytest.fixture
def restore_provider() -> Iterator[None]:
    previous = use_tracer_provider(None)
    use_tracer_provider(previous)
    yield
    use_tracer_provider(previous)


def test_the_console_exporter_writes_one_json_line_per_span(restore_provider: None) -> None:
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        provider = configure_tracing("console", service_name="orders-enricher", set_global=False)
        with consume_span(Record(), "p"):
            pass
        provider.shutdown()

    [line] = stderr.getvalue().splitlines()
    assert '"name": "process orders"' in line and "orders-enricher" in line


def test_none_still_makes_trace_ids_for_logs_and_propagation(restore_provider: None) -> None:
    provider = configure_tracing("none", set_global=False)
    with consume_span(Record(), "p"):
        assert current_trace_id() is not None
    provider.shutdown()


def test_none_propagates_the_event_span_unchanged_to_the_api_and_the_output(restore_provider: None) -> None:
    """Nothing records: the HTTP call and the output carry the consume span's context (the same
    trace id as the input, the consume span as parent), formatted as the W3C propagator would."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider = configure_tracing("none", set_global=False)
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    record = Record(headers={Header.TRACEPARENT: incoming.encode(), Header.TRACESTATE: b"vendor=x"})
    with consume_span(record, "p"):
        assert type(trace.get_current_span()).__name__ == "_UnrecordedSpan"  # the cached path is the one tested
        expected: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(expected)
        with connector_span("customers", "GET", "http://api/v1/customers/C1"):
            http = inject_http_headers({"traceparent": "stale"})
        with produce_span("out", pipeline="p"):
            kafka = inject_headers([(Header.TRACEPARENT, b"stale"), ("event-id", b"e1")])
    assert http == expected and expected["tracestate"] == "vendor=x"
    assert expected["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert expected["traceparent"] != incoming  # a span id of its own, the input's as its parent
    assert dict(kafka) == {"event-id": b"e1", **{k: v.encode() for k, v in expected.items()}}
    provider.shutdown()


@pytest.mark.parametrize("sampler", ["parentbased_always_on", "always_on", "always_off",
                                     "parentbased_always_off", "parentbased_traceidratio", "traceidratio"])
@pytest.mark.parametrize("incoming", [None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"])
def test_none_gives_unrecorded_spans_the_sampling_the_sdk_would(
    sampler: str, incoming: str | None, restore_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sampled flag and tracestate of an unrecorded span are the provider's sampler's answer
    (some samplers' answers are computed without asking them: they must agree)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    provider = configure_tracing("none", set_global=False)
    headers = {Header.TRACEPARENT: incoming.encode(), Header.TRACESTATE: b"vendor=x"} if incoming else {}
    for offset in range(40):  # ratio samplers decide by trace id: several roots
        with consume_span(Record(headers=dict(headers), offset=offset), "p"):
            made = trace.get_current_span().get_span_context()
        parent = extract_context(headers)
        expected = provider.sampler.should_sample(parent, made.trace_id, "process orders", SpanKind.CONSUMER)
        assert made.trace_flags.sampled == expected.decision.is_sampled()
        assert made.trace_state == (expected.trace_state or trace.TraceState())
        if incoming:
            assert f"{made.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    provider.shutdown()


@pytest.mark.parametrize("no_sdk", [trace.ProxyTracerProvider, trace.NoOpTracerProvider])
def test_without_an_sdk_client_and_producer_spans_pass_the_context_through_at_no_cost(
    no_sdk: type[trace.TracerProvider], restore_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library user of ``connectors/`` with no tracing set up: the caller's context still
    reaches the API and the output, and no span machinery runs per call (it was ~100 us each)."""
    import streams.telemetry.tracing as tracing

    provider = no_sdk()
    use_tracer_provider(provider)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)  # as if no global were set
    monkeypatch.setattr(tracing, "_span", lambda *a, **k: pytest.fail("a span was made that nobody records"))
    caller = trace.NonRecordingSpan(trace.SpanContext(int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True,
                                                      trace_flags=trace.TraceFlags(1)))
    with trace.use_span(caller):
        with connector_span("customers", "GET", "http://api/v1/customers/C1"):
            http = inject_http_headers({})
        with produce_span("out", pipeline="p"):
            kafka = dict(inject_headers([]))
    assert http == {"traceparent": TRACEPARENT.decode()}
    assert kafka == {Header.TRACEPARENT: TRACEPARENT}
    with connector_span("customers", "GET", "http://api/v1/customers/C1"):  # no caller: nothing to carry
        assert inject_http_headers({}) == {}


def test_otlp_builds_an_exporter_without_connecting(restore_provider: None) -> None:
    provider = configure_tracing("otlp", otlp_endpoint="http://127.0.0.1:9/v1/traces", set_global=False)
    provider.shutdown()  # nothing was recorded, so nothing is sent


def test_an_unknown_exporter_is_refused(restore_provider: None) -> None:
    with pytest.raises(TelemetryConfigError, match="console, otlp or none"):
        configure_tracing("jaeger", set_global=False)  # type: ignore[arg-type]


async def test_otlp_exports_redacted_spans_to_a_loopback_collector(restore_provider: None) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        received.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces"
        provider = configure_tracing("otlp", service_name="orders-enricher", otlp_endpoint=endpoint, set_global=False)
        with consume_span(Record(), "p") as span:
            span.set_attribute("debug", "Authorization: Bearer otlp-secret-token")
        await asyncio.to_thread(provider.force_flush)  # the exporter posts from its own thread
        await asyncio.to_thread(provider.shutdown)
    finally:
        await runner.cleanup()

    [request] = received
    [exported] = request.resource_spans[0].scope_spans[0].spans
    assert exported.name == "process orders"
    assert "otlp-secret-token" not in str(request)
