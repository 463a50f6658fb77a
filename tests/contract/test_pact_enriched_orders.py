"""Consumer contract for the enriched topic: what a downstream reader of ``orders.enriched`` relies on.

Records on the topic are Avro; the contract describes them decoded, as JSON (timestamps in epoch
milliseconds, as Avro's timestamp-millis stores them), with the subject of the writer schema
in the metadata. The reader declares only the fields it uses, so the pipeline may add fields
(as EnrichedOrder v2 added ``coupon_code``) without breaking it. Writes
``pacts/orders-analytics-orders-enricher.json``; ``test_pact_pipeline_provider.py`` verifies
records the pipeline really produced against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pact import Pact, match

from pipelines.orders import ENRICHED_ORDER
from tests.contract.pacts import ENRICHED_ORDERS_READER, PIPELINE, pact_file

MESSAGE = "an enriched order"
STATE = "an order of a known customer was enriched"


@pytest.fixture(scope="module")
def pact() -> Iterator[Pact]:
    path = pact_file(ENRICHED_ORDERS_READER, PIPELINE)
    path.unlink(missing_ok=True)
    pact = Pact(ENRICHED_ORDERS_READER, PIPELINE).with_specification("V4")
    yield pact
    pact.write_file(Path(path).parent)


def revenue_line(body: str | bytes | None, metadata: dict[str, Any]) -> dict[str, Any]:
    """The reader's use of one message: revenue by customer tier and country, per order."""
    assert metadata.get("avro.subject") == ENRICHED_ORDER, metadata
    record = json.loads(body or b"{}")
    items = sum(item["quantity"] for item in record["items"])
    assert items >= 1
    return {
        "order": record["order_id"],
        "event": record["event_id"],
        "tier": record["customer"]["tier"],
        "country": record["customer"]["country"],
        "currency": record["currency"],
        "amount_cents": int(record["amount_cents"]),
        "items": items,
        "placed_at": int(record["placed_at"]),
        "by": record["pipeline"],
    }


def test_a_reader_gets_revenue_by_tier_from_an_enriched_order(pact: Pact) -> None:
    (
        pact.upon_receiving(MESSAGE, "Async")
        .given(STATE)
        .with_body(
            {
                "event_id": match.str("evt-0001"),
                "order_id": match.str("ord-0001"),
                "placed_at": match.int(1_760_000_000_000),
                "currency": match.regex("EUR", regex=r"^[A-Z]{3}$"),
                "amount_cents": match.int(12_999),
                "items": match.each_like(
                    {"sku": match.str("SKU-00001"), "quantity": match.int(1), "unit_price_cents": match.int(12_999)}
                ),
                "customer": {
                    "customer_id": match.regex("C000042", regex=r"^C\d{6}$"),
                    "tier": match.regex("gold", regex=r"^(bronze|silver|gold|platinum)$"),
                    "country": match.regex("GB", regex=r"^[A-Z]{2}$"),
                },
                "pipeline": match.str("orders-enricher"),
            },
            content_type="application/json",
        )
        .with_metadata({"avro.subject": ENRICHED_ORDER})
    )

    lines: list[dict[str, Any]] = []
    pact.verify(lambda body, metadata: lines.append(revenue_line(body, metadata)), "Async")

    assert lines == [{"order": "ord-0001", "event": "evt-0001", "tier": "gold", "country": "GB", "currency": "EUR",
                      "amount_cents": 12_999, "items": 1, "placed_at": 1_760_000_000_000, "by": "orders-enricher"}]
