"""Contract fixtures: a real Schema Registry (Apicurio) that holds the schemas of ``schemas/``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streams.serde.confluent import ConfluentRegistry
from streams.serde.factory import PushedSchema, push_schemas
from tests.contract.apicurio import registry_for_tests

# The Pact FFI reports usage to a server on the internet unless told not to; tests talk to
# loopback only. Set before any Pact code runs (conftest is imported before the test modules).
os.environ["PACT_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """``SCHEMA_REGISTRY_URL`` if set, else Apicurio started by scripts/apicurio.sh (once per session)."""
    with registry_for_tests() as url:
        yield url


@pytest.fixture(scope="session")
def pushed_schemas(schema_registry_url: str) -> list[PushedSchema]:
    """The registry's ids of schemas/ (registered once; registering again changes nothing)."""
    registry = ConfluentRegistry(schema_registry_url)
    try:
        return push_schemas(registry)
    finally:
        registry.close()


@pytest.fixture
def registry(schema_registry_url: str, pushed_schemas: list[PushedSchema]) -> Iterator[ConfluentRegistry]:
    """A fresh client (empty caches) of the registry that holds our schemas."""
    client = ConfluentRegistry(schema_registry_url)
    yield client
    client.close()
