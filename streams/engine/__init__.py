"""The processing engine: keyed concurrency, ordered acknowledgements, retry tiers, routing."""

from streams.engine.engine import Engine, KafkaPort
from streams.engine.processor import EventProcessor
from streams.engine.records import InboundRecord, OutboundRecord
from streams.engine.retry import RetryPolicy

__all__ = ["Engine", "EventProcessor", "InboundRecord", "KafkaPort", "OutboundRecord", "RetryPolicy"]
