"""Traces: one consumer span per event, a client span per connector call, a producer span per
produce, W3C trace context carried in Kafka headers and HTTP headers.

    provider = configure_tracing("otlp", service_name="orders-enricher")
    with consume_span(record, pipeline="orders-enricher") as span:    # parent from headers
        with connector_span("customers", "GET", url, route="/v1/customers/{id}") as call:
            inject_http_headers(headers)                              # traceparent of `call`
            set_http_status(call, 200)
        with produce_span(outbound.topic, pipeline="orders-enricher", event_id=outbound.event_id):
            inject_headers(outbound.headers)                          # traceparent of the produce
    provider.shutdown()                                               # flush at worker stop

Retry hops: a record coming back from a retry tier (``streams.attempt`` > 1) starts a NEW
TRACE whose consumer span LINKS to the context its headers carry (the previous attempt's
produce span, in the original trace). Why not a child: a hop comes back minutes later (tiers go
up to 10 minutes and more), and one trace that stays open that long is cut, mis-sampled or
shown as one absurdly long request by tracing backends; each attempt as its own trace keeps
durations meaningful, and the link keeps the chain navigable in both directions. A first
attempt is a child of the producer's context, so input → HTTP calls → outputs is one trace.

Spans nobody can export are not recorded. When the provider our spans go to is the SDK's
with no span processor (``STREAMS_TRACE_EXPORTER=none``, the default), each span is a
``NonRecordingSpan`` with a fresh span id: the parent's trace id (a new one for a root), the
flags and tracestate the provider's sampler gives, made current for its block. So trace ids
still reach the logs, and ``traceparent``/``tracestate`` still propagate input → HTTP calls →
outputs exactly as before, but no attributes, links, events or status are computed (about
40 µs of CPU per span otherwise, three spans per event). The trade-off: a span processor
added to that provider later sees only spans started after it was added; live spans report
``is_recording() == False``, and any attribute set on them is dropped (nothing could export it).

Span attributes and exception events never hold secrets: everything here passes
``safe_attributes``, and the exporters ``configure_tracing`` installs redact every exported
span again (attributes, events, links, status), whoever set them.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, Protocol, TypeGuard
from urllib.parse import urlsplit

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor as _SdkSpanProcessors
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
)
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from connectors.instrumentation import set_instrumentation
from streams.names import Header
from streams.telemetry.redaction import REDACTED, is_sensitive_key, redact

__all__ = [
    "ConsumedRecord",
    "TelemetryConfigError",
    "configure_tracing",
    "connector_span",
    "consume_span",
    "current_trace_id",
    "extract_context",
    "inject_headers",
    "inject_http_headers",
    "produce_span",
    "safe_attributes",
    "set_event_outcome",
    "set_http_status",
]

Exporter = Literal["console", "otlp", "none"]
KafkaHeaders = Mapping[str, bytes] | Iterable[tuple[str, bytes]]

TRACER_NAME = "streams"
ATTEMPT_ATTRIBUTE = "streams.attempt"
PIPELINE_ATTRIBUTE = "streams.pipeline"
CONNECTOR_ATTRIBUTE = "streams.connector"
OUTCOME_ATTRIBUTE = "streams.outcome"
ERROR_KIND_ATTRIBUTE = "streams.error.kind"

_propagator = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset(_propagator.fields)  # traceparent, tracestate

# The provider our spans go to: set by configure_tracing (or a test), else OpenTelemetry's global.
_provider: trace.TracerProvider | None = None


class TelemetryConfigError(RuntimeError):
    """Telemetry asked for something this installation cannot do (say, a missing exporter)."""


class ConsumedRecord(Protocol):
    """What ``consume_span`` reads from a consumed record (``streams.engine.records.InboundRecord``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, bytes]: ...


# -- setup ---------------------------------------------------------------------------------------


def configure_tracing(
    exporter: Exporter = "none",
    service_name: str = "streams",
    otlp_endpoint: str | None = None,
    *,
    set_global: bool = True,
) -> TracerProvider:
    """Create the tracer provider our spans go to, and make it OpenTelemetry's global one.

    exporter: ``console`` writes one JSON line per span to stderr; ``otlp`` sends OTLP/HTTP
        protobuf to ``otlp_endpoint`` (the full ``.../v1/traces`` URL; None: the
        ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` variables, else localhost:4318); ``none``
        exports nothing but still makes real trace ids, so logs correlate and
        ``traceparent`` propagates.
    Sampling follows ``OTEL_TRACES_SAMPLER`` (default: parent-based, always on). Call
    ``provider.shutdown()`` at worker stop to flush what is queued.
    """
    global _provider
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    span_exporter: SpanExporter | None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter(out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n")
    elif exporter == "otlp":
        span_exporter = _otlp_exporter(otlp_endpoint)
    elif exporter == "none":
        span_exporter = None
    else:
        raise TelemetryConfigError(f"trace exporter {exporter!r} must be console, otlp or none")
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(span_exporter)))
    _provider = provider
    if set_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # OpenTelemetry allows this once per process
    return provider


def _otlp_exporter(endpoint: str | None) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise TelemetryConfigError(
            "the otlp trace exporter needs the package opentelemetry-exporter-otlp-proto-http "
            "(pip install opentelemetry-exporter-otlp-proto-http), or choose console or none"
        ) from exc
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint)
    return exporter


def use_tracer_provider(provider: trace.TracerProvider | None) -> trace.TracerProvider | None:
    """Send our spans to ``provider`` (None: OpenTelemetry's global one); returns the previous.

    For tests (``streams.telemetry.testing.capture_spans``) and embedders; the worker uses
    ``configure_tracing``.
    """
    global _provider
    previous, _provider = _provider, provider
    return previous


_cached_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def _active_provider() -> trace.TracerProvider:
    """Where our spans go: the provider set with ``use_tracer_provider``, else OpenTelemetry's
    global one (its proxy while none is set)."""
    return _provider if _provider is not None else trace.get_tracer_provider()


def _tracer() -> trace.Tracer:
    global _cached_tracer
    provider = _active_provider()
    if _cached_tracer is None or _cached_tracer[0] is not provider:
        _cached_tracer = (provider, provider.get_tracer(TRACER_NAME))
    return _cached_tracer[1]


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter; every span it exports is redacted first (attributes, events, links, status)."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redact_span(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """A finished span with secrets redacted everywhere they could be (the same span if clean)."""
    name = redact(span.name)
    attributes = safe_attributes(span.attributes or {})
    events = [safe_attributes(event.attributes or {}) for event in span.events]
    links = [safe_attributes(link.attributes or {}) for link in span.links]
    status = span.status
    description = redact(status.description) if status.description else status.description
    if (
        name == span.name
        and description == status.description
        and attributes == dict(span.attributes or {})
        and all(safe == dict(event.attributes or {}) for safe, event in zip(events, span.events, strict=True))
        and all(safe == dict(link.attributes or {}) for safe, link in zip(links, span.links, strict=True))
    ):
        return span  # the common case: nothing to redact, nothing to copy
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=[Event(event.name, safe, event.timestamp) for safe, event in zip(events, span.events, strict=True)],
        links=[Link(link.context, safe) for safe, link in zip(links, span.links, strict=True)],
        kind=span.kind,
        status=Status(status.status_code, description) if description != status.description else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


# -- attributes ----------------------------------------------------------------------------------


def safe_attributes(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Span attributes with secrets redacted: under sensitive names, and inside every string.

    None values are dropped; values that are not attribute types become redacted strings.
    """
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if is_sensitive_key(key):  # http.request.header.authorization, api_key, ...
            out[key] = REDACTED
        elif isinstance(value, str):
            out[key] = redact(value)
        elif isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            items = list(value)
            if all(isinstance(item, bool | int | float) for item in items):
                out[key] = tuple(items)
            else:  # tuples, as the SDK stores sequences, so a clean span compares equal
                out[key] = tuple(redact(str(item)) for item in items)
        else:
            out[key] = redact(str(value))
    return out


def _safe_url(url: str) -> str:
    """The URL without userinfo, its query values redacted where secret."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"{REDACTED}@{host}")
    return redact(parts.geturl())


# -- propagation ---------------------------------------------------------------------------------


def _header_dict(headers: KafkaHeaders) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        if isinstance(value, bytes | bytearray):
            out[key] = bytes(value).decode("utf-8", errors="replace")
        elif value is not None:
            out[key] = str(value)
    return out


def extract_context(headers: KafkaHeaders) -> Context:
    """The W3C trace context (``traceparent``/``tracestate``) carried in Kafka headers.

    Returns an empty context when there is none or it is malformed, never the current one.
    """
    return _propagator.extract(_header_dict(headers), context=Context())


def inject_headers(
    headers: list[tuple[str, bytes]] | MutableMapping[str, bytes], context: Context | None = None
) -> list[tuple[str, bytes]] | MutableMapping[str, bytes]:
    """Write ``traceparent`` (and ``tracestate``) of the current span into Kafka headers.

    ``headers`` is a list of (name, bytes) pairs or a dict; any trace headers already there
    (copied from the input) are replaced. Changes and returns the same object.
    """
    span = trace.get_current_span(context)
    if type(span) is _UnrecordedSpan and isinstance(headers, list):  # the common case: no dict, no encoding
        for name, _ in headers:
            if name in _TRACE_HEADERS:
                headers[:] = [(name, value) for name, value in headers if name not in _TRACE_HEADERS]
                break
        headers.extend(span.kafka_headers())
        return headers
    carrier = _carrier_of(context)
    if carrier is None:
        carrier = {}
        _propagator.inject(carrier, context=context)
    if isinstance(headers, list):
        headers[:] = [(name, value) for name, value in headers if name not in _TRACE_HEADERS]
        headers.extend((name, value.encode()) for name, value in carrier.items())
    else:
        for name in _TRACE_HEADERS:
            headers.pop(name, None)
        headers.update({name: value.encode() for name, value in carrier.items()})
    return headers


def inject_http_headers(headers: MutableMapping[str, str], context: Context | None = None) -> MutableMapping[str, str]:
    """Write ``traceparent`` (and ``tracestate``) of the current span into HTTP request headers."""
    for name in _TRACE_HEADERS:
        headers.pop(name, None)
    carrier = _carrier_of(context)
    if carrier is not None:
        headers.update(carrier)
    else:
        _propagator.inject(headers, context=context)
    return headers


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None outside a span."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


# -- spans ---------------------------------------------------------------------------------------


def _unexported() -> TracerProvider | None:
    """The SDK provider our spans go to, if it has no span processor."""
    provider = _active_provider()
    return provider if _without_processor(provider) else None


def _without_processor(provider: trace.TracerProvider) -> TypeGuard[TracerProvider]:
    """The SDK's provider with no span processor: nothing would see a span."""
    if type(provider) is TracerProvider:
        processors = getattr(provider, "_active_span_processor", None)
        return type(processors) is _SdkSpanProcessors and not processors._span_processors
    return False


def _records_nothing() -> bool:
    """True when no client or producer span of ours could be recorded: the SDK with no span
    processor, or no SDK at all (no provider set: the API's no-op tracer would hand back the
    current span's context, which is what ``_unrecorded_child`` does, minus ~100 us per HTTP call
    of context managers, attribute redaction and URL parsing nobody sees)."""
    provider = _active_provider()
    if _without_processor(provider):
        return True
    if type(provider) is trace.ProxyTracerProvider and _provider is not None:
        # A proxy forwards to the global provider once one is set; until then the API returns it.
        provider = trace.get_tracer_provider()
    return type(provider) in (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


class _UnrecordedSpan(NonRecordingSpan):
    """A ``NonRecordingSpan`` of ours that formats its W3C headers once: the event's HTTP call
    and its output record carry the same context (see ``_unrecorded_child``)."""

    _carrier: dict[str, str] | None = None
    _kafka: tuple[tuple[str, bytes], ...] | None = None

    def kafka_headers(self) -> tuple[tuple[str, bytes], ...]:
        """``carrier`` as Kafka header pairs, encoded once."""
        pairs = self._kafka
        if pairs is None:
            pairs = self._kafka = tuple((name, value.encode()) for name, value in self.carrier().items())
        return pairs

    def carrier(self) -> dict[str, str]:
        carrier = self._carrier
        if carrier is None:
            context = self.get_span_context()
            carrier = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}
            if context.trace_state:
                carrier["tracestate"] = context.trace_state.to_header()
            self._carrier = carrier
        return carrier


def _carrier_of(context: Context | None) -> dict[str, str] | None:
    """The cached headers of the current (or ``context``'s) span when it is one of ours."""
    span = trace.get_current_span(context)
    return span.carrier() if type(span) is _UnrecordedSpan else None


def _unrecorded_span(provider: TracerProvider, name: str, kind: SpanKind,
                     context: Context | None) -> AbstractContextManager[Span]:
    """What the SDK's ``start_as_current_span`` makes, minus the recording: ids, flags and
    tracestate from the parent and the provider's sampler, current for the block."""
    parent = trace.get_current_span(context).get_span_context()
    if parent.is_valid:
        trace_id = parent.trace_id
        random_trace_id = parent.trace_flags.random_trace_id
        flags = parent.trace_flags
        case = (1 if flags.sampled else 2) if parent.is_remote else (3 if flags.sampled else 4)
    else:
        trace_id = provider.id_generator.generate_trace_id()
        random_trace_id = provider.id_generator.is_trace_id_random()
        case = 0
    sampler = provider.sampler
    sampled = _fixed_decisions(sampler)[case]
    if sampled is not None:  # what the sampler would answer, without asking it (see _fixed_decisions)
        trace_state = parent.trace_state if case else None
    else:
        result = sampler.should_sample(context, trace_id, name, kind)
        sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
        trace_state = result.trace_state
    span = _UnrecordedSpan(SpanContext(trace_id, provider.id_generator.generate_span_id(), is_remote=False,
                                       trace_flags=_FLAGS[sampled, random_trace_id], trace_state=trace_state))
    return _CurrentFor(span)


_FLAGS = {(sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                                        | (TraceFlags.RANDOM_TRACE_ID if random else 0))
          for sampled in (False, True) for random in (False, True)}

Fixed = tuple[bool | None, bool | None, bool | None, bool | None, bool | None]
_fixed: tuple[Sampler, Fixed] | None = None


def _fixed_decisions(sampler: Sampler) -> Fixed:
    """Whether ``sampler`` samples a span with no parent, a remote sampled, a remote unsampled,
    a local sampled and a local unsampled parent, where it decides by that alone; None where
    it must be asked.

    The SDK's ``StaticSampler`` (always on, always off) and ``ParentBased`` over them (the default,
    and every ``parentbased_always_*`` of ``OTEL_TRACES_SAMPLER``) decide so, and answer the
    parent's tracestate; this saves building their ``SamplingResult`` for every span.
    """
    global _fixed
    if _fixed is not None and _fixed[0] is sampler:
        return _fixed[1]
    delegates: tuple[object, ...]
    if type(sampler) is ParentBased:
        delegates = tuple(getattr(sampler, name, None) for name in (
            "_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
            "_local_parent_not_sampled"))
    else:
        delegates = (sampler,) * 5
    decisions = tuple(_static_decision(delegate) for delegate in delegates)
    fixed: Fixed = (decisions[0], decisions[1], decisions[2], decisions[3], decisions[4])
    _fixed = (sampler, fixed)
    return fixed


def _static_decision(sampler: object) -> bool | None:
    if type(sampler) is StaticSampler:
        decision = getattr(sampler, "_decision", None)
        if isinstance(decision, Decision):
            return bool(decision.is_sampled())  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
    return None


class _CurrentFor(AbstractContextManager[Span]):
    """Makes a span current for a ``with`` block and yields it: ``trace.use_span`` without its
    exception recording (nothing records), and without a generator per span (an event has three)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = context_api.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        context_api.detach(self._token)  # type: ignore[arg-type]  # the Token attach returned


class _CurrentSpan(AbstractContextManager[Span]):
    """A ``with`` block that yields the current span and changes nothing: a client or producer
    span when nothing records spans (see ``_unrecorded_child``). Stateless, so one serves all."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return _unrecorded_child()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


_CURRENT_SPAN = _CurrentSpan()


def _unrecorded_child() -> Span:
    """A client or producer span when nothing records spans: the current (consume) span itself.

    Its context is what gets propagated: the API and the output record see the event's trace id
    and the consume span's id as their parent, which W3C allows (the parent is "the caller").
    A span of its own would only be a second id nobody ever sees, at ~8 us per event each.
    When a span processor is installed, every span is made and recorded as usual.
    """
    return trace.get_current_span()


@contextlib.contextmanager
def _span(
    name: str,
    *,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    context: Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    unexported = _unexported()
    if unexported is not None:
        with _unrecorded_span(unexported, name, kind, context) as span:
            yield span
        return
    # The SDK's own exception recording would put the raw message and traceback on the span;
    # ours redacts them first.
    with _tracer().start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=safe_attributes(attributes),
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_error(span, exc)
            raise


def record_error(span: Span, exc: BaseException) -> None:
    """Mark the span failed with a redacted ``exception`` event (type, message, stack trace)."""
    if not span.is_recording():
        return
    message = redact(str(exc))
    span.add_event(
        "exception",
        {
            "exception.type": type(exc).__qualname__,
            "exception.message": message,
            "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
        },
    )
    span.set_attribute(error_attributes.ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))


def _attempt(headers: Mapping[str, bytes]) -> int:
    raw = headers.get(Header.ATTEMPT)
    try:
        return max(1, int(raw.decode("ascii"))) if raw else 1
    except (UnicodeDecodeError, ValueError):
        return 1


def consume_span(record: ConsumedRecord, pipeline: str) -> AbstractContextManager[Span]:
    """The span of one event, from consume to produce (kind CONSUMER, named ``process <topic>``).

    First attempt: a child of the ``traceparent`` in the record's headers (a root without one).
    Retry hop (``streams.attempt`` > 1): a new root that links to the context in the headers;
    see the module docstring for why. Never a child of whatever span is current.
    """
    headers = record.headers
    attempt = _attempt(headers)
    unexported = _unexported()
    if unexported is not None:  # nothing records it: only the ids matter, same parent rules
        carried = extract_context(headers) if attempt == 1 and Header.TRACEPARENT in headers else Context()
        return _unrecorded_span(unexported, f"process {record.topic}", SpanKind.CONSUMER, carried)
    return _recorded_consume_span(record, pipeline, attempt)


@contextlib.contextmanager
def _recorded_consume_span(record: ConsumedRecord, pipeline: str, attempt: int) -> Iterator[Span]:
    headers = record.headers
    carried = extract_context(headers)
    links: list[Link] = []
    if attempt > 1:
        carried_span = trace.get_current_span(carried).get_span_context()
        if carried_span.is_valid:
            links.append(Link(carried_span, {ATTEMPT_ATTRIBUTE: attempt - 1, "streams.link": "previous_attempt"}))
        parent = Context()
    else:
        parent = carried
    event_id = headers.get(Header.EVENT_ID)
    attributes = {
        messaging.MESSAGING_SYSTEM: "kafka",
        messaging.MESSAGING_OPERATION_TYPE: "process",
        messaging.MESSAGING_OPERATION_NAME: "process",
        messaging.MESSAGING_DESTINATION_NAME: record.topic,
        messaging.MESSAGING_DESTINATION_PARTITION_ID: str(record.partition),
        messaging.MESSAGING_KAFKA_OFFSET: record.offset,
        messaging.MESSAGING_CONSUMER_GROUP_NAME: pipeline,
        messaging.MESSAGING_MESSAGE_ID: event_id.decode("utf-8", "replace") if event_id else None,
        PIPELINE_ATTRIBUTE: pipeline,
        ATTEMPT_ATTRIBUTE: attempt,
    }
    name = f"process {record.topic}"
    with _span(name, kind=SpanKind.CONSUMER, attributes=attributes, context=parent, links=links) as span:
        yield span


def set_event_outcome(span: Span, outcome: str, *, error_kind: str | None = None, event_id: str | None = None) -> None:
    """Record where the event went (``enriched``, ``retried``, ``dead_lettered``) on its span.

    A dead-lettered event marks the span as failed; a retried one does not (it may succeed).
    """
    if not span.is_recording():
        return
    span.set_attributes(
        safe_attributes(
            {OUTCOME_ATTRIBUTE: outcome, ERROR_KIND_ATTRIBUTE: error_kind, messaging.MESSAGING_MESSAGE_ID: event_id}
        )
    )
    if outcome == "dead_lettered":
        span.set_status(Status(StatusCode.ERROR, f"dead-lettered ({error_kind or 'unknown'})"))


def connector_span(
    connector: str, method: str, url: str, *, route: str | None = None, attempt: int = 1
) -> AbstractContextManager[Span]:
    """A client span for one HTTP attempt of a connector (kind CLIENT, named ``GET /v1/x/{id}``).

    route: the low-cardinality path template, if known (names the span); attempt: 1 for the
    first try of a call, then 2, 3 ... (``http.request.resend_count``). Inside, call
    ``inject_http_headers(headers)`` on the request headers and ``set_http_status`` with the answer.
    An exception leaving the block marks the span failed (redacted).
    """
    if _records_nothing():  # see _unrecorded_child
        return _CURRENT_SPAN
    return _recorded_connector_span(connector, method, url, route, attempt)


@contextlib.contextmanager
def _recorded_connector_span(connector: str, method: str, url: str, route: str | None,
                             attempt: int) -> Iterator[Span]:
    parts = urlsplit(url)
    method = method.upper()
    attributes: dict[str, Any] = {
        http_attributes.HTTP_REQUEST_METHOD: method,
        url_attributes.URL_FULL: _safe_url(url),
        server_attributes.SERVER_ADDRESS: parts.hostname,
        server_attributes.SERVER_PORT: parts.port or (443 if parts.scheme == "https" else 80),
        CONNECTOR_ATTRIBUTE: connector,
        "http.request.resend_count": attempt - 1 if attempt > 1 else None,
        "url.template": route,
    }
    with _span(f"{method} {route}" if route else method, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def set_http_status(span: Span, status: int) -> None:
    """Record the HTTP answer on a connector span; 4xx and 5xx mark it failed (client-span rules)."""
    if not span.is_recording():
        return
    span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
    if status >= 400:
        span.set_attribute(error_attributes.ERROR_TYPE, str(status))
        span.set_status(Status(StatusCode.ERROR))


def produce_span(
    topic: str, *, pipeline: str, partition: int | None = None, event_id: str | None = None
) -> AbstractContextManager[Span]:
    """A producer span for one produced record (kind PRODUCER, named ``send <topic>``).

    Call ``inject_headers(record.headers)`` inside, so the record carries this span's context.
    The span covers handing the record to the producer, not the broker's acknowledgement.
    """
    if _records_nothing():  # see _unrecorded_child
        return _CURRENT_SPAN
    return _recorded_produce_span(topic, pipeline, partition, event_id)


@contextlib.contextmanager
def _recorded_produce_span(topic: str, pipeline: str, partition: int | None, event_id: str | None) -> Iterator[Span]:
    attributes = {
        messaging.MESSAGING_SYSTEM: "kafka",
        messaging.MESSAGING_OPERATION_TYPE: "send",
        messaging.MESSAGING_OPERATION_NAME: "send",
        messaging.MESSAGING_DESTINATION_NAME: topic,
        messaging.MESSAGING_DESTINATION_PARTITION_ID: str(partition) if partition is not None else None,
        messaging.MESSAGING_MESSAGE_ID: event_id,
        PIPELINE_ATTRIBUTE: pipeline,
    }
    with _span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield span


class _SpanTrace:
    """A connector attempt's client span, as ``connectors.instrumentation.AttemptTrace``."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def inject(self, headers: MutableMapping[str, str]) -> None:
        inject_http_headers(headers)

    def status(self, code: int) -> None:
        set_http_status(self._span, code)


class _UnrecordedAttempt(AbstractContextManager["_UnrecordedAttempt"]):
    """An HTTP attempt when nothing records spans: the API gets the current span's context as
    ``traceparent`` (as ``_CurrentSpan``), there is no status to keep. Stateless: one serves all."""

    __slots__ = ()

    def __enter__(self) -> _UnrecordedAttempt:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def inject(self, headers: MutableMapping[str, str]) -> None:
        inject_http_headers(headers)

    def status(self, code: int) -> None:
        return None


_UNRECORDED_ATTEMPT = _UnrecordedAttempt()


class ConnectorTracing:
    """The connectors' instrumentation hook (``connectors.instrumentation``): a client span per
    HTTP attempt, its context sent to the API as ``traceparent``. Installed when this module loads."""

    def attempt(self, connector: str, method: str, url: str, *, route: str | None,
                attempt: int) -> AbstractContextManager[_SpanTrace | _UnrecordedAttempt]:
        if _records_nothing():
            return _UNRECORDED_ATTEMPT
        return self._recorded(connector, method, url, route, attempt)

    @contextlib.contextmanager
    def _recorded(self, connector: str, method: str, url: str, route: str | None, attempt: int) -> Iterator[_SpanTrace]:
        with connector_span(connector, method, url, route=route, attempt=attempt) as span:
            yield _SpanTrace(span)


set_instrumentation(ConnectorTracing())
