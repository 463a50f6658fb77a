"""Names and places of the project's Pact contracts: one file per consumer/provider pair in ``pacts/``.

To cover another connector: add its provider name here, a consumer test module like
``test_pact_customers.py`` (its own ``Pact(PIPELINE, provider)``), and its provider states to
``SANDBOX_PROVIDER_STATES`` in ``test_pact_sandbox_provider.py``; the provider test then
verifies the new pact file against the sandbox by itself.
"""

from __future__ import annotations

from pathlib import Path

PACT_DIR = Path(__file__).resolve().parents[2] / "pacts"

PIPELINE = "orders-enricher"  # consumer of the external APIs; provider of the enriched topic
CUSTOMERS_API = "customers-api"
ENRICHED_ORDERS_READER = "orders-analytics"  # stands for the teams that consume orders.enriched


def pact_file(consumer: str, provider: str) -> Path:
    """Where pact-python writes the contract between ``consumer`` and ``provider``."""
    return PACT_DIR / f"{consumer}-{provider}.json"
