"""The demo pipeline, orders-enricher: OrderPlaced + three APIs and a product table → EnrichedOrder.

Written as any user writes a pipeline: ``streams worker --app pipelines.orders:pipeline``.

- customers (required; OAuth2 and mTLS when ``STREAMS_API_CUSTOMERS_CLIENT_ID`` /
  ``..._CERT_FILE`` are set): who placed the order. When its circuit is open the worker pauses
  consumption instead of failing events.
- risk (optional, batched unless ``ORDERS_RISK_BATCHING=false``, rate-limited for the whole
  group): a fraud score; while the API fails a neutral score stands in and the record is marked
  degraded. Every call carries an ``Idempotency-Key`` and each batch item its event's own key.
- FX rates (optional, cached per Cache-Control, stale-if-error): the amount in EUR; null and
  degraded when no rate is to be had.
- the product catalog (a table read from the products topic, which the catalog source fills):
  each line item's product name and category.

The order is checked first (``pipelines.orders_rules``); the three API steps then run
concurrently. ``ORDERS_ENRICH_WITH`` (default ``customers,risk,fx,products``) leaves some out;
customers is always in. The APIs' base URL defaults to ``STREAMS_API_CUSTOMERS_URL`` (the
sandbox by default), so one variable points the demo at another server.
"""

from __future__ import annotations

import os
import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from time import time
from typing import Any

from pipelines.orders_rules import validate_enriched_order, validate_order_placed
from pipelines.orders_samples import sample_orders
from streams import Api, Batch, Cache, Permanent, Pipeline, Transient

ORDER_PLACED = "dev.streams.orders.OrderPlaced"
ENRICHED_ORDER = "dev.streams.orders.EnrichedOrder"
PRODUCT = "dev.streams.catalog.Product"
NEUTRAL_RISK = {"score": 50, "band": "medium"}  # stands in while the risk API is unavailable

_parts = set(os.environ.get("ORDERS_ENRICH_WITH", "customers,risk,fx,products").split(","))
if not _parts <= {"customers", "risk", "fx", "products"} or "customers" not in _parts:
    raise ValueError("ORDERS_ENRICH_WITH is a comma-separated list of customers (always), risk, fx and products")
WITH_RISK, WITH_FX, WITH_PRODUCTS = "risk" in _parts, "fx" in _parts, "products" in _parts
RISK_BATCHING = os.environ.get("ORDERS_RISK_BATCHING", "true").lower() not in ("false", "0", "no")

_base = os.environ.get("STREAMS_API_CUSTOMERS_URL", "http://127.0.0.1:8080")
customers = Api("customers", _base, probe="/v1/customers/C000001")
risk_api = Api("risk", _base, probe="/v1/risk-scores/health")
fx_api = Api("fx", _base, cache=Cache(ttl=60), probe="/v1/fx-rates/EUR")

pipeline = Pipeline("orders-enricher", source="orders", sink="orders.enriched",
                    input_schema=ORDER_PLACED, output_schema=ENRICHED_ORDER, schemas="../schemas")
products = pipeline.table("products", topic="products", schema=PRODUCT, key="sku",
                          value=lambda p: {"product_id": p["product_id"], "name": p["name"], "category": p["category"]})

_CUSTOMER_FIELDS = ("customer_id", "name", "tier", "country", "since")
_BANDS = frozenset({"low", "medium", "high"})
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@pipeline.step()
def order(event: dict[str, Any]) -> dict[str, Any]:
    """The order, checked before any API sees it: a bad one costs nothing and goes to the DLQ."""
    validate_order_placed(event)
    return event


@pipeline.step(customers)
async def customer(order: dict[str, Any]) -> dict[str, str]:
    body = await customers.get("/v1/customers/{id}", id=order["customer_id"])
    if not isinstance(body, dict):
        raise Permanent(f"customers: response is {type(body).__name__}, expected an object", api="customers")
    record = {}
    for field in _CUSTOMER_FIELDS:
        value = body.get(field)
        if not isinstance(value, str) or len(value) > 256:
            raise Permanent(f"customers: field {field!r} missing or not a short string", api="customers")
        record[field] = value
    if record["customer_id"] != order["customer_id"]:
        raise Permanent("customers: response is for a different customer", api="customers")
    return record


if WITH_RISK and not RISK_BATCHING:
    @pipeline.step(risk_api, required=False, fallback=NEUTRAL_RISK)
    async def risk(order: dict[str, Any]) -> dict[str, Any]:
        """One call per order (the Idempotency-Key is derived from the event)."""
        answer = await risk_api.post("/v1/risk-scores", {"customer_id": order["customer_id"],
                                                         "amount_cents": order["amount_cents"],
                                                         "currency": order["currency"]})
        score = _risk_item(answer)
        if isinstance(score, Exception):
            raise score
        return score
elif WITH_RISK:
    @pipeline.step(risk_api, required=False, fallback=NEUTRAL_RISK, batch=Batch(max_size=50, linger=0.01))
    async def risk(order: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """Scores for many orders in one call; each order gets its own score or its own error.

        Each item carries its event's idempotency key, so an order is scored once whatever batch
        it is retried or replayed in; the request's Idempotency-Key is the batch's.
        """
        keys = risk_api.item_keys("/v1/risk-scores/batch")
        items = [{"id": str(n), "idempotency_key": key, "customer_id": o["customer_id"],
                  "amount_cents": o["amount_cents"], "currency": o["currency"]}
                 for n, (o, key) in enumerate(zip(order, keys, strict=True))]
        answer = await risk_api.post("/v1/risk-scores/batch", {"items": items})
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise Permanent("risk: batch answer has no results list", api="risk")
        by_id = {entry.get("id"): entry for entry in results if isinstance(entry, dict)}
        return [_risk_item(by_id.get(str(n))) for n in range(len(order))]
else:
    @pipeline.step()
    def risk(order: dict[str, Any]) -> None:
        return None


if WITH_FX:
    @pipeline.step(fx_api, required=False, fallback=None)
    async def fx(order: dict[str, Any]) -> int:
        """The amount in EUR cents; an unknown currency fails the event (the order is wrong)."""
        base = order["currency"]
        if not _CURRENCY.match(base):
            raise Permanent(f"fx: {base!r} is not a currency code", api="fx")
        rate = Decimal(1) if base == "EUR" else _rate_to_eur(await fx_api.get("/v1/fx-rates/{base}", base=base), base)
        return int((Decimal(order["amount_cents"]) * rate).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
else:
    @pipeline.step()
    def fx(order: dict[str, Any]) -> None:
        return None


@pipeline.output
def enriched_order(order: dict[str, Any], customer: dict[str, str], risk: dict[str, Any] | None, fx: int | None,
                   degraded: list[str]) -> dict[str, Any]:
    reasons = list(degraded)
    lines = []
    for item in order["items"] if WITH_PRODUCTS else ():
        found = products.get(item["sku"])
        if found is None:
            reasons.append(f"catalog: no product {item['sku']}")
            found = {"product_id": None, "name": "unknown", "category": "unknown"}
        lines.append({"sku": item["sku"], **found})
    record = {
        **order,
        "customer": customer,
        "risk": None if risk is None else {
            "score": risk["score"], "band": risk["band"], "source": "fallback" if risk is NEUTRAL_RISK else "live"},
        "amount_eur_cents": fx,
        "products": lines,
        "degraded": bool(reasons),
        "degraded_reasons": reasons,
        "enriched_at": int(time() * 1000),
        "pipeline": pipeline.name,
    }
    # The encoder checks types; this checks shapes and lengths (of what is new: the order's
    # fields are the input's own objects, checked by the first step).
    validate_enriched_order(record, validated_input=order)
    return record


def _risk_item(entry: Any) -> dict[str, Any] | Exception:
    if not isinstance(entry, dict):
        return Permanent("risk: batch answer lacks an item", api="risk")
    error = entry.get("error")
    if error is not None:
        status = error.get("status") if isinstance(error, dict) else None
        status = status if isinstance(status, int) else None
        message = f"risk: batch item failed with status {status}"
        if status is not None and (status >= 500 or status in (408, 429)):
            return Transient(message, status=status, api="risk")
        return Permanent(message, status=status, api="risk")
    score, band = entry.get("score"), entry.get("band")
    if not isinstance(score, int) or not 0 <= score <= 100 or band not in _BANDS:
        return Permanent("risk: answer has no valid score and band", api="risk")
    return {"score": score, "band": band}


def _rate_to_eur(body: Any, base: str) -> Decimal:
    if not isinstance(body, dict) or body.get("base") != base or not isinstance(body.get("rates"), dict):
        raise Permanent(f"fx: answer is not the rates of {base}", api="fx")
    raw = body["rates"].get("EUR")
    if raw is None:
        raise Permanent(f"fx: no rate from {base} to 'EUR'", api="fx")
    try:
        rate = Decimal(str(raw))
    except InvalidOperation:
        raise Permanent("fx: rate for 'EUR' is not a number", api="fx") from None
    if not rate.is_finite() or rate <= 0:
        raise Permanent("fx: bad rate entry for 'EUR'", api="fx")
    return rate


@pipeline.samples(key="customer_id")
def samples(count: int, seed: int) -> list[dict[str, Any]]:
    return sample_orders(count, seed=seed)
