"""B1, expert: aiokafka + aiohttp, each fetched batch enriched concurrently with ``asyncio.gather``.

    python -m bench.baselines.expert --bootstrap 127.0.0.1:9092 --input in --output out --group g \
        --api-url http://127.0.0.1:8080

Unordered (events of one key run concurrently), no retries, timeouts or breaker: a failed call
crashes the process. The producer lingers 5 ms with 256 KB batches; a batch's offsets are
committed once all its outputs are acknowledged, so nothing is lost, but a crash replays.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

import streams.runtime
from bench.baselines.common import BaselineArgs, Enrichment, parse_args


async def run(args: BaselineArgs) -> None:
    enrichment = Enrichment(args.group)
    consumer = AIOKafkaConsumer(args.input_topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.max_in_flight))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)

    async def enrich(record: ConsumerRecord[bytes, bytes]) -> asyncio.Future[Any]:
        assert record.value is not None
        order = enrichment.decode(record.value)
        async with session.get(f"{args.api_url}/v1/customers/{order['customer_id']}") as response:
            response.raise_for_status()
            customer = await response.json()
        value, headers = enrichment.encode(order, customer)
        delivery: asyncio.Future[Any] = await producer.send(args.output_topic, value, key=record.key, headers=headers)
        return delivery

    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=args.batch_size)
            if not batch:
                continue
            sent = await asyncio.gather(*(enrich(r) for records in batch.values() for r in records))
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await session.close()
        await producer.stop()
        await consumer.stop()


def main() -> None:
    # On the loop ours runs on by default (uvloop where installed): like for like. Only the
    # loop: ours' other runtime tuning (its GC thresholds) is ours' own work.
    streams.runtime.run(run(parse_args("python -m bench.baselines.expert", __doc__)))


if __name__ == "__main__":
    main()
