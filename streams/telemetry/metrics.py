"""Metrics: every metric the pipeline has, defined here and nowhere else, read by Prometheus.

    metrics = PipelineMetrics("orders-enricher")
    metrics.event_in("orders")
    metrics.event_dead_lettered("poison")
    customers = metrics.connector("customers")
    customers.call(200, 0.042)
    breaker.add_listener(customers.on_breaker_transition)
    limiter.add_wait_observer(customers.limiter_wait)
    metrics.render()        # Prometheus text, what /metrics serves

Instruments are OpenTelemetry's; a ``PrometheusMetricReader`` turns them into Prometheus text.
Each ``PipelineMetrics`` has its own ``MeterProvider`` and ``CollectorRegistry`` (never the
global ones), so several can live in one process (tests) without "Duplicated timeseries".
Gauges are observed when scraped, from the last value set or from a function given to ``watch``.
Per-event counters are added up in a plain dict and handed to OpenTelemetry when ``render``
runs (the only reader), which costs a dict increment per event instead of an SDK measurement.

What Prometheus sees (every series also has ``pipeline``):

| name | type | labels |
|---|---|---|
| streams_events_in_total | counter | topic |
| streams_events_out_total | counter | topic (the output topic) |
| streams_events_retried_total | counter | reason (failure kind), tier (retry topic) |
| streams_events_dead_lettered_total | counter | reason (transient, permanent, poison) |
| streams_events_duplicates_total | counter | source (a connector, or where it was detected) |
| streams_events_in_flight | gauge | |
| streams_retry_held | gauge | tier (retry topic, or ``all``) |
| streams_consumer_lag | gauge | topic, partition |
| streams_event_loop_lag_seconds | gauge | |
| streams_connector_call_duration_seconds | histogram | connector, status (HTTP status or error word) |
| streams_connector_breaker_state | gauge (0 closed, 1 half-open, 2 open) | connector |
| streams_connector_breaker_transitions_total | counter | connector, from, to |
| streams_connector_limiter_wait_seconds | histogram | connector |
| streams_connector_cache_lookups_total | counter | connector, result (hit, miss, stale) |
| streams_connector_deprecated_responses_total | counter | connector, route (answers announcing Deprecation/Sunset) |
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal, Protocol

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

__all__ = ["PROMETHEUS_CONTENT_TYPE", "ConnectorMetrics", "MetricName", "PipelineMetrics"]

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram buckets, in seconds.
CALL_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LIMITER_WAIT_BUCKETS: Final = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)

BREAKER_STATE_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}

CacheResult = Literal["hit", "miss", "stale"]


class MetricName:
    """OpenTelemetry instrument names; Prometheus replaces dots with ``_`` and adds ``_total``
    to counters and ``_seconds`` to instruments measured in seconds."""

    EVENTS_IN = "streams.events.in"
    EVENTS_OUT = "streams.events.out"
    EVENTS_RETRIED = "streams.events.retried"
    EVENTS_DEAD_LETTERED = "streams.events.dead_lettered"
    EVENTS_FILTERED = "streams.events.filtered"
    CLIENT_ERRORS = "streams.client.errors"
    DUPLICATES = "streams.events.duplicates"
    IN_FLIGHT = "streams.events.in_flight"
    RETRY_HELD = "streams.retry.held"
    CONSUMER_LAG = "streams.consumer.lag"
    EVENT_LOOP_LAG = "streams.event_loop.lag"
    CONNECTOR_CALL_DURATION = "streams.connector.call.duration"
    BREAKER_STATE = "streams.connector.breaker.state"
    BREAKER_TRANSITIONS = "streams.connector.breaker.transitions"
    LIMITER_WAIT = "streams.connector.limiter.wait"
    CACHE_LOOKUPS = "streams.connector.cache.lookups"
    DEPRECATED_RESPONSES = "streams.connector.deprecated_responses"


class BreakerTransitionLike(Protocol):
    """What a breaker listener receives (``connectors.resilience.breaker.BreakerTransition``)."""

    @property
    def from_state(self) -> Any: ...

    @property
    def to_state(self) -> Any: ...


Labels = tuple[tuple[str, str], ...]


class _Gauge:
    """Values of one observable gauge, by label set, plus functions read at each scrape."""

    __slots__ = ("_lock", "_sources", "_values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Labels, float] = {}
        self._sources: list[Callable[[], Iterable[tuple[Labels, float]]]] = []

    def set(self, value: float, labels: Labels) -> None:
        with self._lock:
            self._values[labels] = value

    def retain(self, keep: Callable[[Labels], bool]) -> None:
        with self._lock:
            self._values = {labels: value for labels, value in self._values.items() if keep(labels)}

    def watch(self, source: Callable[[], Iterable[tuple[Labels, float]]]) -> None:
        self._sources.append(source)

    def observe(self, base: Mapping[str, str]) -> list[Observation]:
        with self._lock:
            items = list(self._values.items())
        for source in self._sources:
            items.extend(source())
        return [Observation(value, {**base, **dict(labels)}) for labels, value in items]


class _CallHistogram:
    """A histogram recorded per connector call with a bisect and two additions (~1 us), served to
    Prometheus by ``collect``. OpenTelemetry's ``Histogram.record`` cost ~10 us per call (label
    hashing, storage lookups, a lock), ~4 % of a busy worker's CPU; the series it exposed are the
    same: name, help, labels, buckets, ``_count`` and ``_sum``.
    """

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...], label_names: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self.label_names = label_names
        self._series: dict[tuple[str, ...], list[float]] = {}  # labels -> [count per bucket..., +Inf, sum]

    def record(self, seconds: float, label_values: tuple[str, ...]) -> None:
        series = self._series.get(label_values)
        if series is None:
            series = self._series[label_values] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        series[-1] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        for label_values, series in list(self._series.items()):
            counts, running, buckets = series[:-1], 0.0, []
            for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric(list(label_values), buckets, sum_value=series[-1])
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)


class PipelineMetrics:
    """The metrics of one pipeline worker, with their own Prometheus registry.

    pipeline: the pipeline name, a label on every series.
    service_name: the OpenTelemetry ``service.name`` (Prometheus ``target_info``).
    """

    def __init__(self, pipeline: str, *, service_name: str | None = None) -> None:
        self.pipeline = pipeline
        self._base = {"pipeline": pipeline}
        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        self._provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.create({SERVICE_NAME: service_name or pipeline}),
            shutdown_on_exit=False,
        )
        meter = self._provider.get_meter("streams")
        self._events_in = meter.create_counter(MetricName.EVENTS_IN, "{event}", "Events consumed")
        self._events_out = meter.create_counter(MetricName.EVENTS_OUT, "{event}", "Enriched events produced")
        self._events_retried = meter.create_counter(
            MetricName.EVENTS_RETRIED, "{event}", "Events sent to a retry tier"
        )
        self._events_dead_lettered = meter.create_counter(
            MetricName.EVENTS_DEAD_LETTERED, "{event}", "Events sent to the dead-letter topic"
        )
        self._events_filtered = meter.create_counter(
            MetricName.EVENTS_FILTERED, "{event}", "Events the pipeline's output dropped (acknowledged, not produced)"
        )
        self._client_errors = meter.create_counter(
            MetricName.CLIENT_ERRORS, "{record}", "Warnings and errors the Kafka client libraries logged, by kind"
        )
        self._duplicates = meter.create_counter(
            MetricName.DUPLICATES, "{event}", "Effects found already done (an idempotency key seen again)"
        )
        self._call_duration = _CallHistogram(
            MetricName.CONNECTOR_CALL_DURATION.replace(".", "_") + "_seconds",
            "Duration of connector HTTP calls",
            CALL_DURATION_BUCKETS,
            ("pipeline", "connector", "status"),
        )
        self.registry.register(self._call_duration)
        self._limiter_wait = meter.create_histogram(
            MetricName.LIMITER_WAIT,
            "s",
            "Time calls waited for the rate limiter",
            explicit_bucket_boundaries_advisory=LIMITER_WAIT_BUCKETS,
        )
        self._breaker_transitions = meter.create_counter(
            MetricName.BREAKER_TRANSITIONS, "{transition}", "Circuit breaker state changes"
        )
        self._cache_lookups = meter.create_counter(MetricName.CACHE_LOOKUPS, "{lookup}", "Connector cache lookups")
        self._deprecated = meter.create_counter(MetricName.DEPRECATED_RESPONSES, "{response}",
                                                "API answers announcing that the route is deprecated")
        self._in_flight = self._gauge(MetricName.IN_FLIGHT, "{event}", "Events being processed now")
        self._retry_held = self._gauge(MetricName.RETRY_HELD, "{event}", "Retry records held until due")
        self._lag = self._gauge(MetricName.CONSUMER_LAG, "{message}", "Messages behind the end of the partition")
        self._loop_lag = self._gauge(MetricName.EVENT_LOOP_LAG, "s", "How late the event loop runs a timer")
        self._breaker_state = self._gauge(
            MetricName.BREAKER_STATE, "1", "Circuit breaker state: 0 closed, 1 half-open, 2 open"
        )
        self._connectors: dict[str, ConnectorMetrics] = {}
        # counts not yet given to their counter: {(counter, ((label, value), ...)): count}; see _flush
        self._pending: dict[tuple[Any, Labels], int] = {}
        self.set_in_flight(0)

    def _gauge(self, name: str, unit: str, description: str) -> _Gauge:
        values = _Gauge()
        base = self._base

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return values.observe(base)

        self._provider.get_meter("streams").create_observable_gauge(name, [observe], unit, description)
        return values

    # -- events ----------------------------------------------------------------------------------

    def _add(self, counter: Any, labels: Labels, count: int = 1) -> None:
        """Count now, hand to ``counter`` at the next ``render`` (events are counted per event)."""
        key = (counter, labels)
        pending = self._pending
        pending[key] = pending.get(key, 0) + count

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (counter, labels), count in pending.items():
            counter.add(count, {**self._base, **dict(labels)})

    def event_in(self, topic: str, count: int = 1) -> None:
        """Events consumed from ``topic`` (the input or a retry tier)."""
        self._add(self._events_in, (("topic", topic),), count)

    def event_out(self, topic: str, count: int = 1) -> None:
        """Enriched events produced to ``topic``."""
        self._add(self._events_out, (("topic", topic),), count)

    def event_retried(self, reason: str, tier: str) -> None:
        """An event sent to the retry tier ``tier`` (its topic) for ``reason`` (the failure kind)."""
        self._add(self._events_retried, (("reason", reason), ("tier", tier)))

    def event_dead_lettered(self, reason: str) -> None:
        """An event sent to the DLQ for ``reason`` (``transient``, ``permanent`` or ``poison``)."""
        self._add(self._events_dead_lettered, (("reason", reason),))

    def event_filtered(self) -> None:
        """An event the pipeline's output builder dropped (it returned None)."""
        self._add(self._events_filtered, ())

    def client_error(self, client: str, kind: str) -> None:
        """A warning or error a client library logged (``kind``: its message template)."""
        self._add(self._client_errors, (("client", client), ("kind", kind)))

    def duplicate_detected(self, source: str) -> None:
        """An effect found already done (say, an API answering a repeated Idempotency-Key)."""
        self._add(self._duplicates, (("source", source),))

    # -- gauges ------------------------------------------------------------------------------------

    def set_in_flight(self, count: int) -> None:
        self._in_flight.set(count, ())

    def set_retry_held(self, count: int, tier: str = "all") -> None:
        """Retry records held (their partition paused) until due, per tier topic or ``all``."""
        self._retry_held.set(count, (("tier", tier),))

    def observe_lag(self, topic: str, partition: int, lag: int) -> None:
        """Messages between the committed offset and the end of ``topic``/``partition``."""
        self._lag.set(lag, (("topic", topic), ("partition", str(partition))))

    def retain_partitions(self, assigned: Iterable[tuple[str, int]]) -> None:
        """Forget the lag of partitions no longer assigned (call on rebalance)."""
        keep = {(("topic", topic), ("partition", str(partition))) for topic, partition in assigned}
        self._lag.retain(keep.__contains__)

    def set_loop_lag(self, seconds: float) -> None:
        self._loop_lag.set(seconds, ())

    def watch(
        self,
        *,
        in_flight: Callable[[], int] | None = None,
        retry_held: Callable[[], int] | None = None,
        lag: Callable[[], Mapping[tuple[str, int], int]] | None = None,
        loop_lag: Callable[[], float] | None = None,
    ) -> None:
        """Read gauges from these functions at each scrape instead of being told.

        ``lag`` returns {(topic, partition): messages behind}. The functions run in the
        thread that scrapes (the event loop's, with ``TelemetryServer``); keep them cheap.
        Use either ``watch`` or the ``set_*`` methods for a gauge, not both.
        """
        if in_flight is not None:
            self._in_flight.watch(lambda: [((), in_flight())])
        if retry_held is not None:
            self._retry_held.watch(lambda: [((("tier", "all"),), retry_held())])
        if lag is not None:
            self._lag.watch(
                lambda: [((("topic", t), ("partition", str(p))), value) for (t, p), value in lag().items()]
            )
        if loop_lag is not None:
            self._loop_lag.watch(lambda: [((), loop_lag())])

    # -- connectors --------------------------------------------------------------------------------

    def connector(self, name: str) -> ConnectorMetrics:
        """The metrics of one connector (the same object for the same name)."""
        found = self._connectors.get(name)
        if found is None:
            found = self._connectors[name] = ConnectorMetrics(self, name)
        return found

    def connector_call(self, connector: str, status: int | str, seconds: float) -> None:
        """One HTTP call of ``connector`` that ended with ``status`` after ``seconds``."""
        self.connector(connector).call(status, seconds)

    # -- output ----------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (what ``/metrics`` serves)."""
        self._flush()
        return generate_latest(self.registry)

    def close(self) -> None:
        """Stop collecting; the registry serves nothing after this."""
        self._provider.shutdown()


class ConnectorMetrics:
    """The metrics of one connector; its methods fit the breaker's and limiter's hooks.

        breaker.add_listener(metrics.on_breaker_transition)
        limiter.add_wait_observer(metrics.limiter_wait)
    """

    __slots__ = ("_by_status", "_labels", "_metrics", "_state_labels", "name")

    def __init__(self, metrics: PipelineMetrics, name: str) -> None:
        self._metrics = metrics
        self.name = name
        self._labels = {**metrics._base, "connector": name}
        self._state_labels: Labels = (("connector", name),)
        self._by_status: dict[int | str, tuple[str, str, str]] = {}  # the labels of each status, made once
        self.breaker_state("closed")

    def call(self, status: int | str, seconds: float) -> None:
        """One call: ``status`` is the HTTP status, or a word (``timeout``, ``connection_error``, ``circuit_open``)."""
        labels = self._by_status.get(status)
        if labels is None:
            labels = self._by_status[status] = (self._metrics.pipeline, self.name, str(status))
        self._metrics._call_duration.record(seconds, labels)

    def breaker_state(self, state: str) -> None:
        """The breaker is now ``closed``, ``half_open`` or ``open`` (a ``BreakerState`` works too)."""
        key = str(state).lower().replace("-", "_")
        if key not in BREAKER_STATE_VALUES:
            raise ValueError(f"breaker state {state!r} must be one of {sorted(BREAKER_STATE_VALUES)}")
        self._metrics._breaker_state.set(BREAKER_STATE_VALUES[key], self._state_labels)

    def on_breaker_transition(self, transition: BreakerTransitionLike) -> None:
        """A ``CircuitBreaker`` listener: counts the transition and sets the state gauge."""
        to_state = str(transition.to_state)
        self.breaker_state(to_state)
        self._metrics._breaker_transitions.add(
            1, {**self._labels, "from": str(transition.from_state), "to": to_state}
        )

    def limiter_wait(self, seconds: float) -> None:
        """A ``RateLimit`` wait observer: how long a call waited for its turn."""
        self._metrics._limiter_wait.record(seconds, self._labels)

    def cache(self, result: CacheResult) -> None:
        self._metrics._add(self._metrics._cache_lookups, (("connector", self.name), ("result", result)))

    def deprecated_response(self, route: str) -> None:
        """The API answered this route with a ``Deprecation`` or ``Sunset`` header."""
        self._metrics._deprecated.add(1, {**self._labels, "route": route})

    def cache_hit(self) -> None:
        self.cache("hit")

    def cache_miss(self) -> None:
        self.cache("miss")
