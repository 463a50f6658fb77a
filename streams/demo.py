"""The README's first command: a whole run of the orders-enricher pipeline on this machine.

Starts the local broker (unless KAFKA_BOOTSTRAP_SERVERS names one) and the sandbox API,
produces sample orders plus two undecodable records, runs a worker, prints enriched records
and the dead-lettered ones, then a summary, and stops what it started.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from typing import Any

from sandbox.server import SandboxServer
from streams.kafka.clients import end_offsets, ensure_topics, producer, read_records
from streams.names import Header, dlq_topic
from streams.pipelines.orders import ORDER_PLACED
from streams.samples import sample_orders
from streams.serde import AvroSerde
from streams.serde.factory import registry_from_url
from streams.settings import REPO_ROOT, Settings
from streams.worker_process import WorkerProcess

INPUT_PARTITIONS = 4
SHOWN = 5


async def run_demo(settings: Settings, count: int) -> int:
    started_broker = False
    bootstrap = settings.kafka_bootstrap_servers
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        from streams.kafka.local import local_broker_running, start_local_broker

        if not local_broker_running():
            print("starting the local Kafka broker (first run fetches its jars with Maven) ...", flush=True)
            started_broker = True
        bootstrap = start_local_broker()
    try:
        return await _run(settings, bootstrap, count)
    finally:
        if started_broker:
            from streams.kafka.local import stop_local_broker

            stop_local_broker()


async def _run(settings: Settings, bootstrap: str, count: int) -> int:
    dlq = dlq_topic(settings.pipeline)
    topics = {settings.input_topic: INPUT_PARTITIONS, settings.output_topic: INPUT_PARTITIONS, dlq: 1}
    await ensure_topics(bootstrap, topics)
    start = {(settings.output_topic, p): o for p, o in (await end_offsets(bootstrap, settings.output_topic)).items()}
    start |= {(dlq, p): o for p, o in (await end_offsets(bootstrap, dlq)).items()}

    serde = AvroSerde(registry_from_url(settings.schema_registry_url))
    orders = sample_orders(count, seed=int(time.time()))
    poison = [b"this is not avro", struct.pack(">bI", 0, 999_999) + b"\x02x"]
    began = time.monotonic()
    async with SandboxServer() as sandbox:
        async with producer(bootstrap) as client:
            futures = [await client.send(settings.input_topic, serde.encode(ORDER_PLACED, o),
                                         key=o["customer_id"].encode()) for o in orders]
            futures += [await client.send(settings.input_topic, raw, key=b"poison") for raw in poison]
            await asyncio.gather(*futures)
        print(f"produced {count} OrderPlaced events and {len(poison)} undecodable records to "
              f"{settings.input_topic}", flush=True)

        log_path = REPO_ROOT / ".local" / "demo-worker.log"
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAMS_CUSTOMERS_API_URL": sandbox.url}
        with WorkerProcess(env, log_path) as worker:
            print(f"worker started (pid {worker.pid}, log {log_path.relative_to(REPO_ROOT)})", flush=True)
            records = await read_records(bootstrap, [settings.output_topic, dlq], start=start,
                                         until=count + len(poison), idle_timeout=60, deadline=120)
        elapsed = time.monotonic() - began

    enriched = [r for r in records if r.topic == settings.output_topic]
    dead = [r for r in records if r.topic == dlq]
    print(f"\nenriched records on {settings.output_topic} (first {min(SHOWN, len(enriched))} of {len(enriched)}):")
    for record in enriched[:SHOWN]:
        print("  " + _describe(serde.decode(record.value)))
    print(f"\ndead-lettered on {dlq}:")
    for record in dead:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        print(f"  {headers.get(Header.EVENT_ID)}  {headers.get(Header.ERROR_KIND)}  "
              f"{headers.get(Header.ERROR_CLASS)}: {headers.get(Header.ERROR_MESSAGE)}")
    ok = len(enriched) == count and len(dead) == len(poison)
    print(f"\nsummary: produced {count + len(poison)}, enriched {len(enriched)}, dead-lettered {len(dead)}, "
          f"in {elapsed:.1f} s: {'OK' if ok else 'INCOMPLETE'}")
    if not ok:
        print(worker.log_tail())
    return 0 if ok else 1


def _describe(order: dict[str, Any]) -> str:
    customer = order["customer"]
    return (f"{order['order_id']}  {order['amount_cents'] / 100:>9.2f} {order['currency']}  "
            f"customer {customer['customer_id']} {customer['name']} ({customer['tier']}, {customer['country']})")
