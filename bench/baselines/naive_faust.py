"""B2, naive Faust: one agent, one awaited HTTP call and one awaited ``topic.send`` per event.

    python -m bench.baselines.naive_faust --bootstrap 127.0.0.1:9092 --input in --output out \
        --group g --api-url http://127.0.0.1:8080

What the Faust tutorial leads to: Faust defaults (no producer linger, per-event acks and
commits by Faust), events of a partition strictly one after another.
"""

from __future__ import annotations

import tempfile

import aiohttp
import faust
from faust.types import StreamT

from bench.baselines.common import Enrichment, parse_args


def main() -> None:
    args = parse_args("python -m bench.baselines.naive_faust", __doc__)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        datadir=tempfile.mkdtemp(prefix="bench-b2-"),
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=1,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(args.input_topic, key_serializer="raw", value_serializer="raw")
    sink = app.topic(args.output_topic, key_serializer="raw", value_serializer="raw")
    enrichment = Enrichment(args.group)

    @app.agent(source)
    async def enrich(stream: StreamT[bytes]) -> None:
        async with aiohttp.ClientSession() as session:
            async for key, value in stream.items():
                order = enrichment.decode(value)
                async with session.get(f"{args.api_url}/v1/customers/{order['customer_id']}") as response:
                    response.raise_for_status()
                    customer = await response.json()
                enriched, headers = enrichment.encode(order, customer)
                await sink.send(key=key, value=enriched, headers=headers)

    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
