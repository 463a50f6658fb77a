"""The console's overview load time and what a worker's announcements cost it.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m bench.console_load [--workers 3] [--partitions 12]

Starts the sandbox and ``--workers`` real workers (``python -m streams worker``, announcing
every 5 s, the default) on a fresh pipeline whose input has ``--partitions`` partitions, then:

- overview load: how long the console's overview data takes (``PipelineView``: the workers'
  last records, committed and end offsets of the input, the 3 retry tiers and the DLQ),
  computed ``--samples`` times; and the cold start: a new view until it shows every worker;
- a worker's announcements: bytes per second on ``<pipeline>.workers`` per worker (its records
  over ``--window`` seconds), the CPU the worker spent taking and encoding them (it reports
  that itself, ``announcer.cpu_s``), and the CPU of producing one such record (``send_and_wait``
  of the same bytes, ``--sends`` times, measured in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sandbox.server import SandboxServer
from streams.console.settings import ConsoleSettings
from streams.console.state import PipelineView
from streams.kafka.clients import ensure_topics
from streams.names import workers_topic
from streams.settings import Settings
from streams.worker_process import WorkerProcess


async def main(args: argparse.Namespace) -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    unique = uuid.uuid4().hex[:8]
    name, source, sink = f"console-bench-{unique}", f"console-bench-{unique}.in", f"console-bench-{unique}.out"
    await ensure_topics(bootstrap, {source: args.partitions, sink: args.partitions})
    workdir = Path(tempfile.mkdtemp(prefix="console-bench-"))
    async with SandboxServer() as sandbox:
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAMS_APP": "pipelines.orders:pipeline",
               "STREAMS_PIPELINE": name, "STREAMS_INPUT_TOPIC": source, "STREAMS_OUTPUT_TOPIC": sink,
               "STREAMS_API_CUSTOMERS_URL": sandbox.url, "ORDERS_ENRICH_WITH": "customers",
               "STREAMS_TELEMETRY_PORT": "0", "STREAMS_LOG_FORMAT": "text"}
        workers = [WorkerProcess({**env, "STREAMS_DATA_DIR": str(workdir / f"w{n}")}, workdir / f"w{n}.log").start()
                   for n in range(args.workers)]
        try:
            settings = Settings(kafka_bootstrap_servers=bootstrap, pipeline=name, input_topic=source,
                                output_topic=sink)
            console = ConsoleSettings()
            began = time.perf_counter()
            view = PipelineView(settings, console)
            await view.start()
            while True:
                overview = await view.compute()  # uncached: what is measured
                owned = {p for w in overview.live for t, p in w.partitions if t == source}
                if len(overview.live) == args.workers and owned == set(range(args.partitions)):
                    break
                if time.perf_counter() - began > 180:
                    raise SystemExit(f"workers did not all announce within 180 s: {workdir}")
                await asyncio.sleep(0.2)
            cold = time.perf_counter() - began
            print(f"cold start (view started until {args.workers} workers and {args.partitions} partitions shown, "
                  f"including the workers' own start-up): {cold:.1f} s")
            took = []
            for _ in range(args.samples):
                overview = await view.compute()
                took.append(overview.took_s)
            took.sort()
            print(f"overview data, {len(overview.lag)} partitions (input + 3 tiers) and {len(overview.live)} workers, "
                  f"{args.samples} loads: median {statistics.median(took) * 1000:.1f} ms, "
                  f"p95 {took[int(len(took) * 0.95) - 1] * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms")
            await view.stop()
            await announcement_cost(bootstrap, name, args)
        finally:
            for worker in workers:
                worker.stop()


async def announcement_cost(bootstrap: str, pipeline: str, args: argparse.Namespace) -> None:
    topic = workers_topic(pipeline)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        window_began = time.time()
        records: dict[str, list[tuple[float, int, dict[str, object]]]] = {}
        while time.time() - window_began < args.window:
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                for r in items:
                    value = json.loads(r.value)
                    records.setdefault(r.key.decode(), []).append((r.timestamp / 1000, len(r.key) + len(r.value),
                                                                   value))
    finally:
        await consumer.stop()
    for worker, seen in sorted(records.items()):
        size = sum(n for _, n, _ in seen)
        first, last = seen[0][2]["announcer"], seen[-1][2]["announcer"]  # type: ignore[index]
        cpu = float(last["cpu_s"]) - float(first["cpu_s"])  # type: ignore[index]
        sent = int(last["sent"]) - int(first["sent"])  # type: ignore[index]
        print(f"worker {worker}: {len(seen)} records in {args.window:.0f} s, {size / args.window:.0f} bytes/s "
              f"(record {size / len(seen):.0f} bytes incl. key); snapshot+encode CPU "
              f"{cpu / max(sent, 1) * 1e6:.0f} us per record, {cpu / args.window * 60 * 1000:.2f} ms per minute")
    sample = next(iter(records.values()))[-1]
    value = json.dumps(sample[2], separators=(",", ":")).encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"bench")
        cpu_began = time.process_time()
        for _ in range(args.sends):
            await producer.send_and_wait(topic, value, key=b"bench")
        per_send = (time.process_time() - cpu_began) / args.sends
    finally:
        await producer.stop()
    interval = float(sample[2]["interval_s"])  # type: ignore[arg-type]
    print(f"producing one {len(value)}-byte announcement: {per_send * 1e6:.0f} us CPU ({args.sends} sends); at one "
          f"every {interval:g} s: {per_send * 60 / interval * 1000:.2f} ms CPU per minute")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--sends", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
