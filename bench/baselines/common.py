"""What the baselines share: their command line and the enrichment they all do the same way.

Every baseline decodes OrderPlaced, adds the customer, encodes EnrichedOrder (latest schema
versions, through ``streams.serde`` like ours) and writes an ``event-id`` header, so the bench
counts their output exactly as it counts ours.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from streams.names import Header
from streams.serde import AvroSerde, EmbeddedRegistry

CUSTOMER_FIELDS = ("customer_id", "name", "tier", "country", "since")
PLACEHOLDER_CUSTOMER = {"customer_id": "", "name": "", "tier": "", "country": "", "since": ""}


@dataclass(frozen=True)
class BaselineArgs:
    bootstrap: str
    input_topic: str
    output_topic: str
    group: str
    api_url: str
    batch_size: int
    max_in_flight: int


def parse_args(prog: str, description: str | None) -> BaselineArgs:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True, dest="input_topic")
    parser.add_argument("--output", required=True, dest="output_topic")
    parser.add_argument("--group", required=True)
    parser.add_argument("--api-url", default="http://127.0.0.1:8080")
    parser.add_argument("--batch-size", type=int, default=500, help="most records per getmany")
    parser.add_argument("--max-in-flight", type=int, default=256, help="HTTP connections")
    args = parser.parse_args()
    return BaselineArgs(args.bootstrap, args.input_topic, args.output_topic, args.group, args.api_url,
                        args.batch_size, args.max_in_flight)


class Enrichment:
    """Decode an order, join a customer, encode the enriched order."""

    def __init__(self, pipeline: str) -> None:
        self.serde = AvroSerde(EmbeddedRegistry.load())
        self._pipeline = pipeline

    def decode(self, value: bytes) -> dict[str, Any]:
        return self.serde.decode(value, ORDER_PLACED)

    def encode(self, order: dict[str, Any], customer: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
        enriched = {
            **order,
            "customer": {name: str(customer[name]) for name in CUSTOMER_FIELDS},
            "enriched_at": int(time.time() * 1000),
            "pipeline": self._pipeline,
        }
        return self.serde.encode(ENRICHED_ORDER, enriched), [(Header.EVENT_ID, str(order["event_id"]).encode())]
