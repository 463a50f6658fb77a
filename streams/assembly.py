"""Getting a pipeline ready to run, the same for every Kafka runtime (aiokafka's, Faust's)."""

from __future__ import annotations

import asyncio
from typing import Any

from connectors.http import HttpConnector
from connectors.resilience.cache import ResponseCache
from streams.api import ApiSettings
from streams.engine.engine import Engine
from streams.engine.retry import RetryPolicy
from streams.names import dlq_topic, processed_topic
from streams.pipeline import Pipeline
from streams.security import kafka_security
from streams.serde.avro import AvroSerde
from streams.settings import Settings, pipeline_names
from streams.telemetry import PipelineMetrics


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
    if settings.dedupe != "off":
        retention_ms = str(int(settings.dedupe_retention_hours * 3600 * 1000))
        await ensure_topics(settings.kafka_bootstrap_servers, {processed_topic(names.pipeline): partitions},
                            config={"cleanup.policy": "delete", "retention.ms": retention_ms}, security=security)
