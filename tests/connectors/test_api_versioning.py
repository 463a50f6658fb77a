"""API versions: a deprecated route is announced once in the log and counted on every answer."""

from __future__ import annotations

import logging

import pytest

from connectors import CustomerConnector, HttpSettings
from sandbox.server import SandboxConfig, SandboxServer
from streams.assembly import observe_api
from streams.telemetry import PipelineMetrics
from streams.telemetry.testing import parse_metrics

SUNSET = "Wed, 01 Jul 2027 00:00:00 GMT"


async def test_deprecation_is_logged_once_and_counted_per_answer(caplog: pytest.LogCaptureFixture) -> None:
    metrics = PipelineMetrics("versioning-test")
    config = SandboxConfig(deprecated={"customers": SUNSET})
    async with SandboxServer(config=config) as api, CustomerConnector(HttpSettings(base_url=api.url)) as customers:
        observe_api(customers.http, None, metrics)
        with caplog.at_level(logging.WARNING, logger="connectors"):
            for n in range(3):
                await customers.get(f"C00000{n}")
    warnings = [r.getMessage() for r in caplog.records if "deprecates" in r.getMessage()]
    assert warnings == [f"connector customers: the API deprecates GET /v1/customers/{{id}} (Deprecation: "
                        f"@1767225600, Sunset: {SUNSET}); plan the move to its successor"]
    assert customers.http.deprecated_responses == {"GET /v1/customers/{id}": 3}
    samples = parse_metrics(metrics.render().decode())
    assert sum(v for k, v in samples.items() if k.startswith("streams_connector_deprecated_responses_total")) == 3
    metrics.close()


async def test_an_api_that_announces_nothing_is_not_counted() -> None:
    async with SandboxServer() as api, CustomerConnector(HttpSettings(base_url=api.url)) as customers:
        await customers.get("C000001")
    assert customers.http.deprecated_responses == {}
