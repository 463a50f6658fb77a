"""The processing engine: batches in, keyed concurrency, routing to output and DLQ."""

from streams.engine.processor import BatchProcessor
from streams.engine.records import InboundRecord, OutboundRecord

__all__ = ["BatchProcessor", "InboundRecord", "OutboundRecord"]
