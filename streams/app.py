"""The worker: a faust-streaming app whose agent runs the engine over the input topic.

Faust gives us the worker, the consumer group, rebalancing and offset commits. The hot path
takes events in batches (``noack_take``), runs them through the ``BatchProcessor``, produces
every outbound record, waits until the broker has acknowledged all of them, and only then
acks the events, in offset order, so Faust never commits past unfinished work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import faust
from faust.types import EventT, StreamT

from streams.engine.processor import BatchProcessor
from streams.engine.records import InboundRecord, OutboundRecord, headers_from_kafka
from streams.pipelines.base import Pipeline
from streams.pipelines.orders import OrderEnricher
from streams.serde.avro import AvroSerde
from streams.serde.registry import EmbeddedRegistry
from streams.settings import Settings

log = logging.getLogger("streams.worker")

PipelineFactory = Callable[[Settings], Pipeline]


def create_app(settings: Settings, pipeline_factory: PipelineFactory = OrderEnricher) -> faust.App:
    """Build the worker app for one pipeline."""
    app = faust.App(
        settings.pipeline,
        broker=";".join(f"kafka://{server}" for server in settings.bootstrap_list),
        datadir=str(settings.data_dir),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval,
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_acks=-1,
        stream_buffer_maxsize=max(4096, settings.batch_size * 4),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")
    serde = AvroSerde(EmbeddedRegistry.load())

    async def enrich(stream: StreamT[bytes]) -> None:
        pipeline = pipeline_factory(settings)
        await pipeline.start()
        processor = BatchProcessor(
            pipeline,
            serde,
            pipeline_name=settings.pipeline,
            output_topic=settings.output_topic,
            max_in_flight=settings.max_in_flight,
        )
        try:
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_linger):
                batch: list[EventT] = list(events)  # noack_take yields the events themselves
                outbound = await processor.run([_inbound(event) for event in batch])
                await _produce_all(app, outbound)
                for event in batch:
                    await stream.ack(event)
        finally:
            await pipeline.close()

    app.agent(source, name=f"{settings.pipeline}.enrich")(enrich)
    return app


def _inbound(event: EventT) -> InboundRecord:
    message = event.message
    return InboundRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000),
        key=message.key,
        value=message.value,
        headers=headers_from_kafka(message.headers),
    )


async def _produce_all(app: faust.App, records: list[OutboundRecord]) -> None:
    """Send every record, then wait for the broker to acknowledge all of them."""
    producer = app.producer
    pending = [
        await producer.send(record.topic, record.key, record.value, None, None, record.headers)
        for record in records
    ]
    await asyncio.gather(*pending)
    dead = sum(1 for record in records if record.failed)
    if dead:
        log.warning("dead-lettered %d of %d events in this batch", dead, len(records))
