"""Getting a pipeline ready to run, the same for every Kafka runtime (aiokafka's, Faust's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sized
from typing import Any, TypeVar

from connectors.http import HttpConnector
from connectors.resilience.cache import ResponseCache
from streams.announce import WORKERS_TOPIC_CONFIG, Announcer, WorkerState
from streams.api import ApiSettings
from streams.engine.dedupe import DedupeMode, ProcessedIds
from streams.engine.engine import Engine, KafkaPort
from streams.engine.parking import KeyParking, TierScanner
from streams.engine.processor import EventProcessor
from streams.engine.retry import RetryPolicy
from streams.names import dlq_topic, processed_topic, workers_topic
from streams.pipeline import Pipeline
from streams.security import kafka_security
from streams.serde.avro import AvroSerde
from streams.serde.factory import registry_from_url
from streams.settings import Settings, pipeline_names
from streams.telemetry import LoopLagMonitor, PipelineMetrics, Readiness, TelemetryServer
from streams.telemetry import logging as telemetry_logging


def bind_pipeline(pipeline: Pipeline, settings: Settings) -> None:
    """Give each API of the pipeline its settings (``STREAMS_API_<NAME>_*`` over the code's values
    over the worker-wide defaults); raises ValueError naming the variable that is missing or wrong."""
    for api in pipeline.apis:
        api.bind(ApiSettings.from_environment(api, default_timeout=settings.http_timeout,
                                              default_retries=settings.http_max_attempts))


def know_output_fields(pipeline: Pipeline, serde: AvroSerde) -> None:
    """Tell the pipeline its output schema's fields (it fills ``degraded`` and ``degraded_reasons``
    when they are there); raises LookupError when the registry lacks the subject."""
    output_schema = serde.registry.latest(pipeline.output_subject)
    pipeline.set_output_fields([field["name"] for field in output_schema.definition.get("fields", [])])


def observe_api(http: HttpConnector, cache: ResponseCache[str, Any] | None, metrics: PipelineMetrics) -> None:
    """An API's call latency by status, deprecation notices, breaker state and transitions,
    limiter waits and cache lookups, as the pipeline's metrics."""
    own = metrics.connector(http.name)
    http.add_call_observer(lambda outcome: own.call(outcome.status, outcome.seconds))
    http.add_deprecation_observer(own.deprecated_response)
    if http.breaker is not None:
        http.breaker.add_listener(own.on_breaker_transition)
        own.breaker_state(http.breaker.state.value)
    if http.limiter is not None:
        http.limiter.add_wait_observer(own.limiter_wait)
    if cache is not None:
        cache.add_lookup_observer(own.cache)


def paused_briefly(engine: Engine[Any], limit: float) -> tuple[bool, str]:
    since = engine.breaker_paused_since
    if since is None:
        return True, "consuming"
    paused = asyncio.get_running_loop().time() - since
    return paused < limit, f"paused {paused:.0f} s for an open circuit"


async def prepare_topics(settings: Settings) -> None:
    """Check the input exists; create the retry tiers (as many partitions) and the DLQ."""
    from streams.kafka.clients import ensure_topics, partition_count

    names = pipeline_names(settings)
    security = kafka_security(settings)
    partitions = await partition_count(settings.kafka_bootstrap_servers, names.input_topic, security=security)
    if not partitions:
        raise RuntimeError(f"input topic {names.input_topic!r} does not exist on "
                           f"{settings.kafka_bootstrap_servers}; create it first (streams topics)")
    retry = RetryPolicy(names.pipeline, settings.retry_delay_list)
    wanted = {topic: partitions for topic in retry.topics}
    wanted[dlq_topic(names.pipeline)] = 1
    await ensure_topics(settings.kafka_bootstrap_servers, wanted, security=security)
    if settings.announce_interval > 0:
        await ensure_topics(settings.kafka_bootstrap_servers, {workers_topic(names.pipeline): 1},
                            config=WORKERS_TOPIC_CONFIG, security=security)
    if settings.dedupe != "off":
        retention_ms = str(int(settings.dedupe_retention_hours * 3600 * 1000))
        await ensure_topics(settings.kafka_bootstrap_servers, {processed_topic(names.pipeline): partitions},
                            config={"cleanup.policy": "delete", "retention.ms": retention_ms}, security=security)


def log_stats(log: logging.Logger, processor: EventProcessor, engine: Engine[Any]) -> None:
    """The worker's closing line: what it processed and how each event ended."""
    stats = processor.stats
    log.info("processed %d: enriched %d, filtered %d, retried %d, dead-lettered %d, parked %d, stale copies %d, "
             "duplicates %d (dropped %d); acked %d, released %d, peak in flight %d", stats.processed, stats.enriched,
             stats.filtered, stats.retried, stats.dead_lettered, stats.parked, stats.stale, stats.duplicates,
             stats.dropped_duplicates, engine.acked, engine.released, engine.peak_in_flight)


class WorkerTelemetry:
    """What ``start_telemetry`` started: the telemetry server and the announcer (either may be off)."""

    def __init__(self, server: TelemetryServer | None, announcer: Announcer | None) -> None:
        self.server = server
        self.announcer = announcer

    async def stop(self) -> None:
        """Announce that the worker stopped, and stop serving."""
        try:
            if self.announcer is not None:
                await self.announcer.stop()
        finally:
            if self.server is not None:
                await self.server.stop()


async def start_telemetry(
    settings: Settings, engine: Engine[Any], metrics: PipelineMetrics | None, *,
    assigned: Callable[[], Sized], broker_reachable: Callable[[], Awaitable[tuple[bool, str]]],
    lag: Callable[[], dict[tuple[str, int], int]],
) -> WorkerTelemetry:
    """Serve /metrics, /healthz and /readyz; readiness asks the consumer (``assigned``), the broker
    and the engine. Each runtime says how its consumer answers. Unless ``STREAMS_ANNOUNCE_INTERVAL``
    is 0, the worker announces its state to ``<pipeline>.workers`` (``streams.announce``)."""
    announcer = None
    if settings.announce_interval > 0:
        pipeline = engine.processor.pipeline
        apis = pipeline.apis if isinstance(pipeline, Pipeline) else []
        state = WorkerState(engine, apis, pipeline=pipeline_names(settings).pipeline, runtime=settings.runtime,
                            interval=settings.announce_interval)
        announcer = Announcer(settings, state)
        await announcer.start()
    return WorkerTelemetry(await _start_server(settings, engine, metrics, assigned=assigned,
                                               broker_reachable=broker_reachable, lag=lag), announcer)


async def _start_server(
    settings: Settings, engine: Engine[Any], metrics: PipelineMetrics | None, *,
    assigned: Callable[[], Sized], broker_reachable: Callable[[], Awaitable[tuple[bool, str]]],
    lag: Callable[[], dict[tuple[str, int], int]],
) -> TelemetryServer | None:
    if not settings.telemetry_enabled:
        return None
    loop_lag = LoopLagMonitor()
    loop_lag.start()
    readiness = Readiness(timeout=2.0)
    readiness.add("partitions_assigned", lambda: (bool(len(assigned())), f"{len(assigned())} partitions"))
    readiness.add("broker_reachable", broker_reachable)
    readiness.add("event_loop", loop_lag.check(max_lag=2.0))
    readiness.add("not_paused_for_open_circuit", lambda: paused_briefly(engine, settings.stuck_after))
    readiness.add("retry_partitions_released", lambda: (not engine.overdue_partitions(30.0),
                                                        [str(tp) for tp in engine.overdue_partitions(30.0)]))
    if metrics is not None:
        metrics.watch(in_flight=lambda: engine.in_flight, retry_held=lambda: engine.held, lag=lag,
                      loop_lag=lambda: loop_lag.lag)
    server = TelemetryServer(settings.telemetry_host, settings.telemetry_port, readiness, metrics=metrics)
    await server.start()
    return server


H = TypeVar("H")


async def start_processing(settings: Settings, pipeline: Pipeline, retry: RetryPolicy, port: KafkaPort[H],
                           metrics: PipelineMetrics | None) -> tuple[Engine[H], EventProcessor]:
    """Everything between a runtime's consumer and producer, started: the pipeline (its output
    fields, tables, API metrics; its APIs and tables started), the processor and the engine on
    ``port``. Client errors the logging filter counts go to ``metrics``."""
    serde = AvroSerde(registry_from_url(settings.schema_registry_url, schemas_dir=pipeline.schemas_dir))
    know_output_fields(pipeline, serde)
    security = kafka_security(settings)
    for table in pipeline.tables.values():
        table.bind(settings.kafka_bootstrap_servers, serde, security)
    if metrics is not None:
        for api in pipeline.apis:
            if api.connector is not None:
                observe_api(api.connector, api.response_cache, metrics)
        if telemetry_logging.repeated_errors is not None:
            telemetry_logging.repeated_errors.on_repeat = metrics.client_error
    await pipeline.start()
    processed = ProcessedIds(settings.kafka_bootstrap_servers, processed_topic(pipeline.name),
                             mode=DedupeMode(settings.dedupe), max_ids=settings.dedupe_max_ids, security=security)
    # Strict key order rebuilds each partition's state from the retry tiers past the group's
    # committed offsets (streams.engine.parking), the same way under both runtimes.
    parking = KeyParking(TierScanner(settings.kafka_bootstrap_servers, pipeline_names(settings).pipeline,
                                     retry.topics, security)) if settings.strict_key_order else None
    processor = EventProcessor(
        pipeline, serde, pipeline_name=pipeline.name, output_topic=pipeline.sink, retry=retry,
        processed_ids=processed, strict_key_order=settings.strict_key_order, parking=parking,
        max_record_bytes=settings.max_record_bytes)
    engine: Engine[H] = Engine(
        processor, port, max_in_flight=settings.max_in_flight, max_buffered=settings.max_buffered,
        drain_deadline=settings.drain_deadline, processed_ids=processed, pipeline=pipeline.name,
        metrics=metrics, ordered=pipeline.ordered)
    await engine.start()
    return engine, processor
