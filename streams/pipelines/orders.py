"""The orders-enricher pipeline: OrderPlaced + four APIs → EnrichedOrder.

- customers (required, behind OAuth2 when configured): who placed the order. When its circuit
  is open the engine pauses consumption (``BreakerOpen``) rather than failing events.
- risk (optional, micro-batched, rate-limited for the whole group): a fraud score; while the
  API fails a neutral fallback stands in and the record is marked degraded.
- FX rates (optional, cached per Cache-Control, stale-if-error): the amount in EUR; null and
  degraded when no rate is to be had.
- the product catalog (a table read from the products topic, which the catalog source fills):
  each line item's product name and category.
The three API calls run concurrently for each event.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal
from time import time
from typing import Any

from connectors.base import ApiConnector
from connectors.customers import CustomerConnector
from connectors.errors import PermanentError, TransientError
from connectors.fx import FxRatesConnector
from connectors.http import HttpSettings
from connectors.observe import observe_connector
from connectors.resilience.limiter import RateLimitSettings
from connectors.results import ConnectorResult, Source
from connectors.risk import RiskRequest, RiskScore, RiskScoreConnector
from streams.pipelines.catalog import ProductCatalog
from streams.pipelines.validation import validate_enriched_order, validate_order_placed
from streams.security import customers_auth, customers_tls, kafka_security
from streams.serde.avro import AvroSerde
from streams.serde.factory import registry_from_url
from streams.settings import Settings
from streams.telemetry.metrics import PipelineMetrics

ORDER_PLACED = "dev.streams.orders.OrderPlaced"
ENRICHED_ORDER = "dev.streams.orders.EnrichedOrder"
NEUTRAL_RISK = RiskScore(score=50, band="medium")  # stands in while the risk API is unavailable


class OrderEnricher:
    """Joins each order with its customer, a risk score, its EUR amount and its products."""

    input_subject = ORDER_PLACED
    output_subject = ENRICHED_ORDER

    def __init__(self, settings: Settings, metrics: PipelineMetrics | None = None) -> None:
        self._pipeline = settings.pipeline
        self._risk_batching = settings.risk_batching
        parts = set(settings.enrich_with.split(","))
        self._with_risk, self._with_fx, self._with_products = "risk" in parts, "fx" in parts, "products" in parts

        def http(url: str | None) -> HttpSettings:
            return HttpSettings(
                base_url=url or settings.customers_api_url,
                total_timeout=settings.http_timeout,
                read_timeout=settings.http_timeout,
                max_connections=settings.max_in_flight,
                max_attempts=settings.http_max_attempts,
            )

        def limit(rate: float | None) -> RateLimitSettings | None:
            return RateLimitSettings(rate=rate) if rate else None

        self._customers = CustomerConnector(replace(http(settings.customers_api_url), tls=customers_tls(settings)),
                                            auth=customers_auth(settings),  # OAuth2 and mTLS when configured
                                            rate_limit=limit(settings.customers_rate_limit))
        self._risk = RiskScoreConnector(http(settings.risk_api_url), rate_limit=limit(settings.risk_rate_limit),
                                        fallback=NEUTRAL_RISK)
        self._fx = FxRatesConnector(http(settings.fx_api_url))
        self._connectors: list[ApiConnector] = [self._customers]
        self._connectors += [self._risk] if self._with_risk else []
        self._connectors += [self._fx] if self._with_fx else []
        self._catalog = ProductCatalog(settings.kafka_bootstrap_servers, settings.products_topic,
                                       AvroSerde(registry_from_url(settings.schema_registry_url)),
                                       client_config=kafka_security(settings))
        if metrics is not None:
            for connector in self._connectors:
                observe_connector(connector, metrics)
            self._fx.cache.add_lookup_observer(metrics.connector(self._fx.name).cache)

    async def start(self) -> None:
        for connector in self._connectors:
            await connector.start()
        if self._with_products:
            await self._catalog.start()

    async def close(self) -> None:
        await self._catalog.close()
        for connector in self._connectors:
            await connector.close()

    def on_assignment(self, owned_partitions: int, total_partitions: int) -> None:
        for connector in self._connectors:
            if connector.limiter is not None:
                connector.limiter.set_share(owned_partitions, total_partitions)

    async def process(self, event: dict[str, Any]) -> dict[str, Any]:
        validate_order_placed(event)  # before any API call: a bad event costs nothing and goes to the DLQ
        if not (self._with_risk or self._with_fx):
            customer = await self._customers.get(event["customer_id"])
            risk, (amount_eur, fx_problem) = None, (None, None)
        else:
            customer, risk, (amount_eur, fx_problem) = await asyncio.gather(
                self._customers.get(event["customer_id"]), self._risk_of(event), self._amount_in_eur(event)
            )
        reasons = [] if fx_problem is None else [fx_problem]
        if risk is not None and risk.degraded:
            reasons.append(f"risk: {risk.source.value} ({risk.reason})")
        products = []
        for item in event["items"] if self._with_products else ():
            found = self._catalog.lookup(item["sku"])
            if found is None:
                reasons.append(f"catalog: no product {item['sku']}")
                found = {"product_id": None, "name": "unknown", "category": "unknown"}
            products.append({"sku": item["sku"], **found})
        enriched = {
            **event,
            "customer": customer,
            "risk": None if risk is None else {
                "score": risk.value.score, "band": risk.value.band,
                "source": "live" if risk.source in (Source.LIVE, Source.CACHE) else risk.source.value},
            "amount_eur_cents": amount_eur,
            "products": products,
            "degraded": bool(reasons),
            "degraded_reasons": reasons,
            "enriched_at": int(time() * 1000),
            "pipeline": self._pipeline,
        }
        # The encoder checks types; this checks shapes and lengths (of what is new: the order's
        # fields are the input's own objects, validated above).
        validate_enriched_order(enriched, validated_input=event)
        return enriched

    async def _risk_of(self, event: dict[str, Any]) -> ConnectorResult[RiskScore] | None:
        if not self._with_risk:
            return None
        request = RiskRequest(event["customer_id"], event["amount_cents"], event["currency"])
        return await (self._risk.score_batched(request) if self._risk_batching else self._risk.score(request))

    async def _amount_in_eur(self, event: dict[str, Any]) -> tuple[int | None, str | None]:
        """The amount in EUR cents, or None and why (FX is optional: it never fails the event)."""
        if not self._with_fx:
            return None, None
        try:
            result = await self._fx.rate(event["currency"], "EUR")
        except TransientError as exc:
            return None, f"fx: unavailable ({type(exc).__name__})"
        except PermanentError:
            raise  # an unknown currency: the event is wrong, not the API
        amount = (Decimal(event["amount_cents"]) * result.value).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        problem = None if not result.degraded else f"fx: {result.source.value} rate ({result.reason})"
        return int(amount), problem
