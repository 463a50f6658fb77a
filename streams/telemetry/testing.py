"""Test helpers: capture finished spans in memory, scrape and parse Prometheus text.

    with capture_spans() as spans:
        with consume_span(record, "orders-enricher"):
            ...
    [span] = spans.get_finished_spans()

    values = await scrape(f"{server.url}/metrics")
    assert values['streams_events_in_total{pipeline="p",topic="orders"}'] == 3
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from streams.telemetry.tracing import RedactingSpanExporter, use_tracer_provider

__all__ = ["capture_spans", "parse_metrics", "sample_key", "scrape"]


@contextlib.contextmanager
def capture_spans() -> Iterator[InMemorySpanExporter]:
    """Send our spans, redacted as exported spans are, to an in-memory exporter, for the block.

    The provider is private to the block, so tests neither share spans nor touch
    OpenTelemetry's global provider (which can be set only once per process).
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(exporter)))
    previous = use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(previous)
        provider.shutdown()


def sample_key(name: str, **labels: str) -> str:
    """The key ``parse_metrics`` uses for a sample: ``name{a="1",b="2"}``, labels sorted."""
    if not labels:
        return name
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {``name{labels}``: value} for every sample (see ``sample_key``)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample_key(sample.name, **sample.labels)] = sample.value
    return values


async def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """GET a ``/metrics`` URL and parse it; raises for a status other than 200."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(url) as response,
    ):
        response.raise_for_status()
        return parse_metrics(await response.text())
