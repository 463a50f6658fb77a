"""Observability against a real broker and API: traces across Kafka and HTTP, metrics that match the topics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.kafka.clients import ensure_topics, producer
from streams.names import Header, retry_topic
from streams.telemetry.testing import scrape
from tests.conftest import SandboxThread
from tests.integration.harness import (
    SERDE,
    TopicCollector,
    headers_of,
    pipeline_under_test,
    set_faults,
    wait_for,
)

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CONNECTOR = "streams.connector"


def _spans(log_text: str) -> list[dict[str, Any]]:
    """The spans the console exporter wrote, one JSON object per line, among the JSON log lines."""
    spans = []
    for line in log_text.splitlines():
        if line.startswith("{") and '"context"' in line and '"kind"' in line:
            spans.append(json.loads(line))
    return spans


def _trace(span: dict[str, Any]) -> str:
    return str(span["context"]["trace_id"]).removeprefix("0x")


def _id(span: dict[str, Any]) -> str:
    return str(span["context"]["span_id"]).removeprefix("0x")


def _parent(span: dict[str, Any]) -> str | None:
    parent = span.get("parent_id")
    return str(parent).removeprefix("0x") if parent else None


async def test_one_event_retried_once_is_traced_through_kafka_and_http(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=1)
    await set_faults(fault_sandbox.url, "customers", {"outages": [{"start_s": 0, "duration_s": None, "status": 503}]})
    tier = retry_topic(pipeline.name, "3s")
    await ensure_topics(kafka_bootstrap, {tier: 1})
    order = sample_orders(1, seed=21)[0]
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    async with producer(kafka_bootstrap) as client:
        await (await client.send(pipeline.input_topic, SERDE.encode(ORDER_PLACED, order),
                                 key=order["customer_id"].encode(), headers=[("traceparent", traceparent.encode())]))

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, tier]) as seen:
        with pipeline.worker(0, STREAMS_TRACE_EXPORTER="console", STREAMS_HTTP_MAX_ATTEMPTS="1",
                             STREAMS_RETRY_DELAYS="3s") as worker:
            await seen.wait_until(lambda r: len(r) == 1, deadline=60, what="the event in the retry tier")
            await set_faults(fault_sandbox.url, "customers", None)  # the outage ends
            await seen.wait_until(lambda r: len(r) == 2, deadline=60, what="the event after one retry")
        spans = _spans(worker.log_path.read_text())  # the exporter flushes at shutdown

    consume = [s for s in spans if s["kind"] == "SpanKind.CONSUMER"]
    client = [s for s in spans if s["kind"] == "SpanKind.CLIENT" and s["attributes"].get(CONNECTOR) == "customers"]
    produce = [s for s in spans if s["kind"] == "SpanKind.PRODUCER"]
    assert [s["attributes"]["messaging.destination.name"] for s in consume] == [pipeline.input_topic, tier]
    assert [s["attributes"]["messaging.destination.name"] for s in produce] == [tier, pipeline.output_topic]
    assert len(client) == 2
    first, second = consume
    # Attempt 1: a child of the producer's traceparent; its API call and its produce to the tier below it.
    assert _trace(first) == TRACE_ID and _parent(first) == "00f067aa0ba902b7"
    assert _parent(client[0]) == _id(first) and _trace(client[0]) == TRACE_ID
    assert client[0]["attributes"]["http.response.status_code"] == 503
    assert _parent(produce[0]) == _id(first)
    # Attempt 2, from the retry tier: linked to the produce span of attempt 1.
    links = second.get("links") or []
    assert [str(link["context"]["span_id"]).removeprefix("0x") for link in links] == [_id(produce[0])]
    assert [str(link["context"]["trace_id"]).removeprefix("0x") for link in links] == [TRACE_ID]
    assert _parent(client[1]) == _id(second) and client[1]["attributes"]["http.response.status_code"] == 200
    assert _parent(produce[1]) == _id(second)
    # The API saw each attempt's trace, and the output record carries the second one.
    seen_by_api = [r.headers["traceparent"].split("-")[1] for r in fault_sandbox.server.stats.of("customers")]
    assert seen_by_api == [TRACE_ID, _trace(second)]
    output_traceparent = headers_of(seen.on(pipeline.output_topic)[0])[Header.TRACEPARENT]
    assert output_traceparent.split("-")[1] == _trace(second)
    assert output_traceparent.split("-")[2] == _id(produce[1])


def _total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(value for key, value in samples.items()
               if key.split("{")[0] == name and all(w in key for w in wanted))


async def test_metrics_counters_equal_what_is_on_the_output_retry_and_dlq_topics(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=4)
    await set_faults(fault_sandbox.url, "customers", {"errors": {"503": 0.05, "404": 0.02}})
    orders = sample_orders(2_000, customers=500)
    tiers = [retry_topic(pipeline.name, d) for d in ("1s", "2s", "3s", "4s")]
    await ensure_topics(kafka_bootstrap, dict.fromkeys(tiers, 4))  # as the worker makes them, for the collector
    await pipeline.produce(orders)

    async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq, *tiers]) as seen:
        with pipeline.worker(0, STREAMS_HTTP_MAX_ATTEMPTS="1", STREAMS_RETRY_DELAYS="1s,2s,3s,4s") as worker:
            def settled(records: list[Any]) -> bool:
                done = {headers_of(r)[Header.EVENT_ID] for r in records if r.topic != tiers[0]
                        and r.topic in (pipeline.output_topic, pipeline.dlq)}
                return len(done) >= len(orders)

            await seen.wait_until(settled, deadline=120, what="every event on the output or in the DLQ")
            port = int(re.findall(r"telemetry server on http://127\.0\.0\.1:(\d+)", worker.log_path.read_text())[0])
            url = f"http://127.0.0.1:{port}/metrics"

            async def counters_match() -> dict[str, float] | None:
                samples = await scrape(url)
                observed = (
                    _total(samples, "streams_events_out_total", topic=pipeline.output_topic),
                    sum(_total(samples, "streams_events_retried_total", tier=t) for t in tiers),
                    _total(samples, "streams_events_dead_lettered_total"),
                )
                expected = (len(seen.on(pipeline.output_topic)), sum(len(seen.on(t)) for t in tiers),
                            len(seen.on(pipeline.dlq)))
                last[:] = [observed, expected]
                return samples if observed == expected else None

            last: list[Any] = []
            try:
                samples = await wait_for(counters_match, deadline=20, what="/metrics to match the topics")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: (out, retried, dead) on /metrics vs topics: {last}") from None
            health = await _get(f"http://127.0.0.1:{port}/healthz")
            ready = await _get(f"http://127.0.0.1:{port}/readyz")

    assert health[0] == 200 and ready[0] == 200, ready
    out = len(seen.on(pipeline.output_topic))
    assert _total(samples, "streams_events_in_total", topic=pipeline.input_topic) == len(orders)
    assert _total(samples, "streams_connector_call_duration_seconds_count", connector="customers") > len(orders)
    print(f"\n/metrics matched the topics: {out} out, {sum(len(seen.on(t)) for t in tiers)} retried, "
          f"{len(seen.on(pipeline.dlq))} dead-lettered")


async def _get(url: str) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()
