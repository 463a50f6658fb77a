"""The orders-enricher pipeline: OrderPlaced + the customer API → EnrichedOrder."""

from __future__ import annotations

from time import time
from typing import Any

from connectors.customers import CustomerConnector
from connectors.http import HttpSettings
from connectors.observe import observe_connector
from connectors.resilience.limiter import RateLimitSettings
from streams.settings import Settings
from streams.telemetry.metrics import PipelineMetrics

ORDER_PLACED = "dev.streams.orders.OrderPlaced"
ENRICHED_ORDER = "dev.streams.orders.EnrichedOrder"


class OrderEnricher:
    """Joins each order with its customer."""

    input_subject = ORDER_PLACED
    output_subject = ENRICHED_ORDER

    def __init__(self, settings: Settings, metrics: PipelineMetrics | None = None) -> None:
        self._pipeline = settings.pipeline
        self._customers = CustomerConnector(
            HttpSettings(
                base_url=settings.customers_api_url,
                total_timeout=settings.http_timeout,
                read_timeout=settings.http_timeout,
                max_connections=settings.max_in_flight,
                max_attempts=settings.http_max_attempts,
            ),
            rate_limit=RateLimitSettings(rate=settings.customers_rate_limit) if settings.customers_rate_limit else None,
        )
        if metrics is not None:
            observe_connector(self._customers, metrics)

    async def start(self) -> None:
        await self._customers.start()

    def on_assignment(self, owned_partitions: int, total_partitions: int) -> None:
        if self._customers.limiter is not None:
            self._customers.limiter.set_share(owned_partitions, total_partitions)

    async def close(self) -> None:
        await self._customers.close()

    async def process(self, event: dict[str, Any]) -> dict[str, Any]:
        customer = await self._customers.get(event["customer_id"])
        return {
            **event,
            "customer": customer,
            "enriched_at": int(time() * 1000),
            "pipeline": self._pipeline,
        }
