"""The pipelines this product ships. Each turns one decoded input event into one output record."""

from streams.pipelines.base import Pipeline
from streams.pipelines.orders import OrderEnricher

__all__ = ["OrderEnricher", "Pipeline"]
