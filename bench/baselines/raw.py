"""B0, raw: aiokafka ``getmany`` → decode + encode → send → commit. No HTTP, no ordering work.

    python -m bench.baselines.raw --bootstrap 127.0.0.1:9092 --input in --output out --group g

The customer is a fixed placeholder, so the serialization work equals the enriching pipelines'.
"""

from __future__ import annotations

import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import streams.runtime
from bench.baselines.common import PLACEHOLDER_CUSTOMER, BaselineArgs, Enrichment, parse_args


async def run(args: BaselineArgs) -> None:
    enrichment = Enrichment(args.group)
    consumer = AIOKafkaConsumer(args.input_topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=args.batch_size)
            if not batch:
                continue
            sent = []
            for records in batch.values():
                for record in records:
                    assert record.value is not None
                    value, headers = enrichment.encode(enrichment.decode(record.value), PLACEHOLDER_CUSTOMER)
                    sent.append(await producer.send(args.output_topic, value, key=record.key, headers=headers))
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    # On the loop ours runs on by default (uvloop where installed): like for like. Only the
    # loop: ours' other runtime tuning (its GC thresholds) is ours' own work.
    streams.runtime.run(run(parse_args("python -m bench.baselines.raw", __doc__)))


if __name__ == "__main__":
    main()
