"""The README's first command: a whole run of the orders-enricher pipeline on this machine.

Starts the local broker (unless KAFKA_BOOTSTRAP_SERVERS names one) and the sandbox API,
produces sample orders plus two undecodable records, runs a worker, prints enriched records
and the dead-lettered ones, then a summary, and stops what it started.

Kafka security is the worker's (``STREAMS_KAFKA_SECURITY_PROTOCOL``, ``STREAMS_KAFKA_SSL_*``,
``STREAMS_KAFKA_SASL_*``): the demo's own clients and its catalog source use it, and the worker
it starts inherits the environment. The local broker speaks PLAINTEXT, so it is started only
when neither a bootstrap server nor a security protocol is configured.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from sandbox.server import SandboxServer
from streams.kafka.clients import end_offsets, ensure_topics, producer, read_records
from streams.names import Header, dlq_topic
from streams.security import kafka_security
from streams.serde import AvroSerde
from streams.serde.factory import registry_from_url
from streams.settings import REPO_ROOT, Settings, pipeline_names
from streams.worker_process import WorkerProcess

DEMO_APP = "pipelines.orders:pipeline"  # the demo pipeline, run as any user's pipeline is
PRODUCTS_TOPIC = "products"  # the orders pipeline's products table
INPUT_PARTITIONS = 4
SHOWN = 5


async def run_demo(settings: Settings, count: int) -> int:
    try:
        security = kafka_security(settings)
    except ValueError as exc:  # names the setting, never a secret
        print(f"demo: {exc}", flush=True)
        return 2
    started_broker = False
    bootstrap = settings.kafka_bootstrap_servers
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and settings.kafka_security_protocol == "PLAINTEXT":
        from streams.kafka.local import local_broker_running, start_local_broker

        if not local_broker_running():
            print("starting the local Kafka broker (first run fetches its jars with Maven) ...", flush=True)
            started_broker = True
        bootstrap = start_local_broker()
    try:
        return await _run(settings, bootstrap, count, security)
    finally:
        if started_broker:
            from streams.kafka.local import stop_local_broker

            stop_local_broker()


async def _run(settings: Settings, bootstrap: str, count: int, security: Mapping[str, Any] | None = None) -> int:
    names = pipeline_names(settings)
    dlq = dlq_topic(names.pipeline)
    topics = {names.input_topic: INPUT_PARTITIONS, names.output_topic: INPUT_PARTITIONS, dlq: 1}
    await ensure_topics(bootstrap, topics, security=security)
    start = {(names.output_topic, p): o
             for p, o in (await end_offsets(bootstrap, names.output_topic, security=security)).items()}
    start |= {(dlq, p): o for p, o in (await end_offsets(bootstrap, dlq, security=security)).items()}

    serde = AvroSerde(registry_from_url(settings.schema_registry_url, schemas_dir=settings.schemas_dir))
    orders = sample_orders(count, seed=int(time.time()))
    poison = [b"this is not avro", struct.pack(">bI", 0, 999_999) + b"\x02x"]
    began = time.monotonic()
    async with SandboxServer() as sandbox:
        products = await _load_catalog(bootstrap, sandbox.url, PRODUCTS_TOPIC, security)
        print(f"catalog source: {products} products on {PRODUCTS_TOPIC}", flush=True)
        log_path = REPO_ROOT / ".local" / "demo-worker.log"
        log_path.unlink(missing_ok=True)
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAMS_APP": DEMO_APP, "STREAMS_API_CUSTOMERS_URL": sandbox.url,
               "STREAMS_TELEMETRY_PORT": "0"}
        with WorkerProcess(env, log_path) as worker:
            print(f"worker started (pid {worker.pid}, log {log_path.relative_to(REPO_ROOT)})", flush=True)
            if not await _wait_ready(worker, log_path, deadline=60):
                print("worker did not become ready:\n" + worker.log_tail())
                return 1
            async with producer(bootstrap, security=security) as client:
                futures = [await client.send(names.input_topic, serde.encode(ORDER_PLACED, o),
                                             key=o["customer_id"].encode()) for o in orders]
                futures += [await client.send(names.input_topic, raw, key=b"poison") for raw in poison]
                await asyncio.gather(*futures)
            print(f"produced {count} OrderPlaced events and {len(poison)} undecodable records to "
                  f"{names.input_topic}", flush=True)
            records = await read_records(bootstrap, [names.output_topic, dlq], start=start,
                                         until=count + len(poison), idle_timeout=60, deadline=120,
                                         security=security)
            metrics = await _scrape_worker(log_path)
        elapsed = time.monotonic() - began

    enriched = [r for r in records if r.topic == names.output_topic]
    dead = [r for r in records if r.topic == dlq]
    print(f"\nenriched records on {names.output_topic} (first {min(SHOWN, len(enriched))} of {len(enriched)}):")
    for record in enriched[:SHOWN]:
        print("  " + _describe(serde.decode(record.value)))
    print(f"\ndead-lettered on {dlq}:")
    for record in dead:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        print(f"  {headers.get(Header.EVENT_ID)}  {headers.get(Header.ERROR_KIND)}  "
              f"{headers.get(Header.ERROR_CLASS)}: {headers.get(Header.ERROR_MESSAGE)}")
    ok = len(enriched) == count and len(dead) == len(poison)
    latencies = sorted(_end_to_end_ms(record) for record in enriched)
    print(f"\nsummary (worker /metrics): processed {_metric(metrics, 'streams_events_in_total'):.0f}, "
          f"enriched {_metric(metrics, 'streams_events_out_total'):.0f}, "
          f"retried {_metric(metrics, 'streams_events_retried_total'):.0f}, "
          f"dead-lettered {_metric(metrics, 'streams_events_dead_lettered_total'):.0f}; "
          f"end-to-end latency p50 {_percentile(latencies, 50):.0f} ms, p99 {_percentile(latencies, 99):.0f} ms; "
          f"{elapsed:.1f} s in all: {'OK' if ok else 'INCOMPLETE'}")
    if not ok:
        print(worker.log_tail())
    return 0 if ok else 1


async def _wait_ready(worker: WorkerProcess, log_path: Path, deadline: float) -> bool:
    """Wait until the worker's /readyz says ready (partitions assigned, broker reachable)."""
    import aiohttp

    end = time.monotonic() + deadline
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        while time.monotonic() < end and worker.alive:
            url = _telemetry_url(log_path)
            if url is not None:
                try:
                    async with session.get(url + "/readyz") as response:
                        if response.status == 200:
                            return True
                except (OSError, aiohttp.ClientError):
                    pass
            await asyncio.sleep(0.2)
    return False


def _telemetry_url(log_path: Path) -> str | None:
    try:
        found = re.findall(r"telemetry server on (http://[\d.:]+)", log_path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    return found[-1] if found else None


async def _scrape_worker(log_path: Path) -> dict[str, float]:
    """The worker's /metrics, at the port it logged (it picks a free one)."""
    from streams.telemetry.testing import scrape

    url = _telemetry_url(log_path)
    if url is None:
        return {}
    try:
        return await scrape(url + "/metrics")
    except OSError:
        return {}


def _metric(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key.split("{")[0] == name)


def _end_to_end_ms(record: Any) -> float:
    """Broker time of the enriched record minus broker time of the input record it came from."""
    headers = {k: v.decode() for k, v in record.headers}
    return float(record.timestamp - int(headers[Header.ORIGIN_TIMESTAMP]))


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


async def _load_catalog(bootstrap: str, api_url: str, topic: str, security: Mapping[str, Any] | None = None) -> int:
    """Page the sandbox catalog into the products topic (a rerun resumes from its checkpoint)."""
    from connectors.catalog import CatalogConnector
    from connectors.http import HttpSettings
    from streams.sources.catalog import CatalogSource, CatalogSourceSettings

    settings = CatalogSourceSettings(bootstrap_servers=bootstrap, topic=topic, checkpoint_topic=f"{topic}.checkpoints",
                                     security=dict(security or {}))
    async with CatalogConnector(HttpSettings(base_url=api_url)) as catalog:
        return (await CatalogSource(settings, catalog).run()).products


def _describe(order: dict[str, Any]) -> str:
    customer, risk = order["customer"], order.get("risk") or {}
    eur = order.get("amount_eur_cents")
    first = (order.get("products") or [{}])[0].get("name", "?")
    return (f"{order['order_id']}  {order['amount_cents'] / 100:>9.2f} {order['currency']}"
            f" = {eur / 100 if eur is not None else float('nan'):>9.2f} EUR  "
            f"{customer['name']} ({customer['tier']}, {customer['country']})  "
            f"risk {risk.get('score')} {risk.get('band')}  {len(order.get('products') or [])} items: {first}"
            f"{'  DEGRADED' if order.get('degraded') else ''}")
