"""Connect a connector's observable parts to the pipeline's metrics, in one place."""

from __future__ import annotations

from connectors.base import ApiConnector
from connectors.http import CallOutcome
from streams.telemetry.metrics import PipelineMetrics


def observe_connector(connector: ApiConnector, metrics: PipelineMetrics) -> None:
    """Call latency by status, deprecation notices, breaker state and transitions, limiter waits."""
    own = metrics.connector(connector.name)

    def on_call(outcome: CallOutcome) -> None:
        own.call(outcome.status, outcome.seconds)

    connector.http.add_call_observer(on_call)
    connector.http.add_deprecation_observer(own.deprecated_response)
    connector.breaker.add_listener(own.on_breaker_transition)
    own.breaker_state(connector.breaker.state.value)
    if connector.limiter is not None:
        connector.limiter.add_wait_observer(own.limiter_wait)
