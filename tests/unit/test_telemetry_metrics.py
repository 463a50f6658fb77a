"""Metrics: exact values in the Prometheus text, every name in one place, no registry collisions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from connectors.resilience.breaker import BreakerState
from streams.telemetry import PipelineMetrics
from streams.telemetry.testing import parse_metrics, sample_key


@pytest.fixture
def metrics() -> Iterator[PipelineMetrics]:
    m = PipelineMetrics("orders-enricher")
    yield m
    m.close()


def values(metrics: PipelineMetrics) -> dict[str, float]:
    return parse_metrics(metrics.render().decode())


def key(name: str, **labels: str) -> str:
    return sample_key(name, pipeline="orders-enricher", **labels)


def test_event_counters_show_exactly_what_was_recorded(metrics: PipelineMetrics) -> None:
    for _ in range(3):
        metrics.event_in("orders")
    metrics.event_in("orders-enricher.retry.5s", count=2)
    metrics.event_out("orders.enriched", count=4)
    metrics.event_retried("transient", "orders-enricher.retry.5s")
    metrics.event_dead_lettered("poison")
    metrics.event_dead_lettered("poison")
    metrics.event_dead_lettered("permanent")
    metrics.duplicate_detected("risk")

    v = values(metrics)
    assert v[key("streams_events_in_total", topic="orders")] == 3
    assert v[key("streams_events_in_total", topic="orders-enricher.retry.5s")] == 2
    assert v[key("streams_events_out_total", topic="orders.enriched")] == 4
    assert v[key("streams_events_retried_total", reason="transient", tier="orders-enricher.retry.5s")] == 1
    assert v[key("streams_events_dead_lettered_total", reason="poison")] == 2
    assert v[key("streams_events_dead_lettered_total", reason="permanent")] == 1
    assert v[key("streams_events_duplicates_total", source="risk")] == 1


def test_connector_calls_are_a_latency_histogram_by_status(metrics: PipelineMetrics) -> None:
    metrics.connector_call("customers", 200, 0.02)
    metrics.connector_call("customers", 200, 0.3)
    metrics.connector("customers").call("timeout", 5.0)

    v = values(metrics)
    name = "streams_connector_call_duration_seconds"
    assert v[key(f"{name}_count", connector="customers", status="200")] == 2
    assert v[key(f"{name}_sum", connector="customers", status="200")] == pytest.approx(0.32)
    assert v[key(f"{name}_bucket", connector="customers", status="200", le="0.025")] == 1
    assert v[key(f"{name}_bucket", connector="customers", status="200", le="0.5")] == 2
    assert v[key(f"{name}_count", connector="customers", status="timeout")] == 1
    # Prometheus buckets are "less than or equal": a value on a bound counts in that bound's bucket.
    metrics.connector_call("customers", 503, 0.05)
    metrics.connector_call("customers", 503, 45.0)
    v = values(metrics)
    assert v[key(f"{name}_bucket", connector="customers", status="503", le="0.025")] == 0
    assert v[key(f"{name}_bucket", connector="customers", status="503", le="0.05")] == 1
    assert v[key(f"{name}_bucket", connector="customers", status="503", le="30.0")] == 1
    assert v[key(f"{name}_bucket", connector="customers", status="503", le="+Inf")] == 2
    assert v[key(f"{name}_sum", connector="customers", status="503")] == pytest.approx(45.05)


@dataclass
class Transition:
    from_state: BreakerState
    to_state: BreakerState


def test_breaker_state_is_a_gauge_and_transitions_are_counted(metrics: PipelineMetrics) -> None:
    customers = metrics.connector("customers")
    assert values(metrics)[key("streams_connector_breaker_state", connector="customers")] == 0

    customers.on_breaker_transition(Transition(BreakerState.CLOSED, BreakerState.OPEN))
    assert values(metrics)[key("streams_connector_breaker_state", connector="customers")] == 2
    customers.on_breaker_transition(Transition(BreakerState.OPEN, BreakerState.HALF_OPEN))
    v = values(metrics)
    assert v[key("streams_connector_breaker_state", connector="customers")] == 1
    opened = {"connector": "customers", "from": "closed", "to": "open"}
    assert v[key("streams_connector_breaker_transitions_total", **opened)] == 1

    with pytest.raises(ValueError, match="breaker state"):
        customers.breaker_state("ajar")


def test_limiter_waits_and_cache_lookups_by_connector(metrics: PipelineMetrics) -> None:
    risk = metrics.connector("risk")
    risk.limiter_wait(0.0)
    risk.limiter_wait(0.2)
    risk.cache_hit()
    risk.cache_hit()
    risk.cache_miss()
    risk.cache("stale")

    v = values(metrics)
    assert v[key("streams_connector_limiter_wait_seconds_count", connector="risk")] == 2
    assert v[key("streams_connector_limiter_wait_seconds_sum", connector="risk")] == pytest.approx(0.2)
    assert v[key("streams_connector_cache_lookups_total", connector="risk", result="hit")] == 2
    assert v[key("streams_connector_cache_lookups_total", connector="risk", result="miss")] == 1
    assert v[key("streams_connector_cache_lookups_total", connector="risk", result="stale")] == 1


def test_gauges_show_the_last_value_and_forget_revoked_partitions(metrics: PipelineMetrics) -> None:
    assert values(metrics)[key("streams_events_in_flight")] == 0
    metrics.set_in_flight(17)
    metrics.set_retry_held(5, tier="orders-enricher.retry.1m")
    metrics.set_loop_lag(0.25)
    metrics.observe_lag("orders", 0, 100)
    metrics.observe_lag("orders", 1, 7)
    metrics.observe_lag("orders", 0, 90)

    v = values(metrics)
    assert v[key("streams_events_in_flight")] == 17
    assert v[key("streams_retry_held", tier="orders-enricher.retry.1m")] == 5
    assert v[key("streams_event_loop_lag_seconds")] == 0.25
    assert v[key("streams_consumer_lag", topic="orders", partition="0")] == 90
    assert v[key("streams_consumer_lag", topic="orders", partition="1")] == 7

    metrics.retain_partitions([("orders", 1)])
    v = values(metrics)
    assert key("streams_consumer_lag", topic="orders", partition="0") not in v
    assert v[key("streams_consumer_lag", topic="orders", partition="1")] == 7


def test_watched_gauges_are_read_at_each_scrape(metrics: PipelineMetrics) -> None:
    held = [1]
    lag = {("orders", 2): 11}
    metrics.watch(retry_held=lambda: held[0], lag=lambda: lag, loop_lag=lambda: 0.5)
    assert values(metrics)[key("streams_consumer_lag", topic="orders", partition="2")] == 11

    held[0] = 4
    lag[("orders", 2)] = 0
    v = values(metrics)
    assert v[key("streams_retry_held", tier="all")] == 4
    assert v[key("streams_consumer_lag", topic="orders", partition="2")] == 0
    assert v[key("streams_event_loop_lag_seconds")] == 0.5


def test_two_pipelines_in_one_process_do_not_collide() -> None:
    first, second = PipelineMetrics("orders-enricher"), PipelineMetrics("orders-enricher")
    try:
        first.event_in("orders")
        second.event_in("orders", count=5)
        assert values(first)[key("streams_events_in_total", topic="orders")] == 1
        assert values(second)[key("streams_events_in_total", topic="orders")] == 5
    finally:
        first.close()
        second.close()


def test_the_text_names_every_metric_with_help(metrics: PipelineMetrics) -> None:
    metrics.event_in("t")
    metrics.event_out("t")
    metrics.event_retried("transient", "r")
    metrics.event_dead_lettered("poison")
    metrics.duplicate_detected("x")
    metrics.observe_lag("t", 0, 1)
    metrics.set_loop_lag(0)
    metrics.set_retry_held(0)
    c = metrics.connector("c")
    c.call(200, 0.1)
    c.limiter_wait(0)
    c.cache_hit()
    c.on_breaker_transition(Transition(BreakerState.CLOSED, BreakerState.OPEN))

    text = metrics.render().decode()
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert families >= {
        "streams_events_in_total", "streams_events_out_total", "streams_events_retried_total",
        "streams_events_dead_lettered_total", "streams_events_duplicates_total", "streams_events_in_flight",
        "streams_retry_held", "streams_consumer_lag", "streams_event_loop_lag_seconds",
        "streams_connector_call_duration_seconds", "streams_connector_breaker_state",
        "streams_connector_breaker_transitions_total", "streams_connector_limiter_wait_seconds",
        "streams_connector_cache_lookups_total",
    }
    assert "otel_scope_name" not in text  # no per-sample scope labels
