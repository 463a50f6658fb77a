"""Telemetry: JSON-lines logs, OpenTelemetry traces, Prometheus metrics, health endpoints.

Everything a worker, the engine and the connectors call is re-exported here; the modules say
how each part works (``logging``, ``redaction``, ``tracing``, ``metrics``, ``server``), and
``testing`` has helpers for tests.
"""

from streams.telemetry.logging import (
    FAUST_WORKER_LOGGING,
    bind_event,
    bound_event,
    configure_logging,
    faust_worker,
    parse_level_spec,
)
from streams.telemetry.metrics import ConnectorMetrics, MetricName, PipelineMetrics
from streams.telemetry.redaction import clear_secrets, redact, redact_value, register_secret
from streams.telemetry.server import (
    METRICS_KEY,
    LoopLagMonitor,
    Readiness,
    TelemetryServer,
    metrics_handler,
)
from streams.telemetry.tracing import (
    TelemetryConfigError,
    configure_tracing,
    connector_span,
    consume_span,
    current_trace_id,
    extract_context,
    inject_headers,
    inject_http_headers,
    produce_span,
    record_error,
    safe_attributes,
    set_event_outcome,
    set_http_status,
)

__all__ = [
    "FAUST_WORKER_LOGGING",
    "METRICS_KEY",
    "ConnectorMetrics",
    "LoopLagMonitor",
    "MetricName",
    "PipelineMetrics",
    "Readiness",
    "TelemetryConfigError",
    "TelemetryServer",
    "bind_event",
    "bound_event",
    "clear_secrets",
    "configure_logging",
    "configure_tracing",
    "connector_span",
    "consume_span",
    "current_trace_id",
    "extract_context",
    "faust_worker",
    "inject_headers",
    "inject_http_headers",
    "metrics_handler",
    "parse_level_spec",
    "produce_span",
    "record_error",
    "redact",
    "redact_value",
    "register_secret",
    "safe_attributes",
    "set_event_outcome",
    "set_http_status",
]
