"""Integration fixtures: the product catalog topic every worker under test reads."""

from __future__ import annotations

import asyncio

import pytest

from connectors.catalog import CatalogConnector
from connectors.http import HttpSettings
from streams.sources.catalog import CatalogSource, CatalogSourceSettings
from tests.conftest import SandboxThread
from tests.integration.harness import PRODUCTS_TOPIC


@pytest.fixture(scope="session", autouse=True)
def catalog_products(kafka_bootstrap: str, sandbox: SandboxThread) -> str:
    """Fill the tests' products topic from the sandbox catalog, once (a rerun resumes and ends)."""

    async def fill() -> None:
        settings = CatalogSourceSettings(bootstrap_servers=kafka_bootstrap, topic=PRODUCTS_TOPIC,
                                         checkpoint_topic=f"{PRODUCTS_TOPIC}.checkpoints", source_id="streams-tests")
        async with CatalogConnector(HttpSettings(base_url=sandbox.url)) as catalog:
            await CatalogSource(settings, catalog).run()

    asyncio.run(fill())
    return PRODUCTS_TOPIC


@pytest.fixture(params=["aiokafka", "faust"])
def runtime(request: pytest.FixtureRequest) -> str:
    """Both Kafka runtimes, for the tests every runtime must pass (crash, shutdown, scale)."""
    return str(request.param)
