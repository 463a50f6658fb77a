"""Micro-batching through the risk connector against the real sandbox's batch endpoint."""

from __future__ import annotations

import asyncio
import time

from connectors import (
    BatchSettings,
    BreakerSettings,
    HttpSettings,
    PermanentError,
    RiskRequest,
    RiskScore,
    RiskScoreConnector,
    Source,
    TransientError,
)
from connectors.results import ConnectorResult
from sandbox.faults import FaultSpec
from sandbox.risk import risk_score
from sandbox.server import SandboxServer

FAILING = {7, 23, 41}


def request(i: int) -> RiskRequest:
    """Order i; the ones in FAILING have a negative amount, which the API refuses (422)."""
    return RiskRequest(f"C{i:06d}", -1 if i in FAILING else 1000 * i, "EUR")


async def test_a_batch_with_three_failing_items_routes_exactly_those_three_failures(api: SandboxServer) -> None:
    batch = BatchSettings(max_size=50, linger=1.0)  # the size, not the linger, sends it
    async with RiskScoreConnector(HttpSettings(base_url=api.url), batch=batch) as risk:
        outcomes = await asyncio.gather(*(risk.score_batched(request(i)) for i in range(50)), return_exceptions=True)
    assert api.stats.requests["risk_batch"] == 1 and list(risk.batcher.batches_sent) == [50]
    failed = {i for i, o in enumerate(outcomes) if isinstance(o, BaseException)}
    assert failed == FAILING
    for i in FAILING:
        error = outcomes[i]
        assert isinstance(error, PermanentError) and error.status == 422 and error.connector == "risk"
    for i, outcome in enumerate(outcomes):
        if i not in FAILING:
            assert isinstance(outcome, ConnectorResult)
            expected, _ = risk_score({"customer_id": f"C{i:06d}", "amount_cents": 1000 * i, "currency": "EUR"})
            assert expected is not None
            assert outcome.value == RiskScore(expected["score"], expected["band"]), f"item {i} got another's score"


async def test_a_partial_batch_goes_out_after_its_linger(api: SandboxServer) -> None:
    async with RiskScoreConnector(HttpSettings(base_url=api.url), batch=BatchSettings(linger=0.05)) as risk:
        began = time.monotonic()
        await asyncio.gather(*(risk.score_batched(request(i)) for i in range(3)))
        took = time.monotonic() - began
    assert list(risk.batcher.batches_sent) == [3]
    assert 0.05 <= took < 0.3, took


async def test_more_items_than_a_batch_holds_are_split_by_size(api: SandboxServer) -> None:
    async with RiskScoreConnector(HttpSettings(base_url=api.url), batch=BatchSettings(max_size=50)) as risk:
        await asyncio.gather(*(risk.score_batched(request(i)) for i in range(100, 220)))
    assert list(risk.batcher.batches_sent) == [50, 50, 20]


async def test_when_the_batch_call_fails_every_item_of_it_gets_the_error(api: SandboxServer) -> None:
    api.faults.set("risk_batch", FaultSpec.parse({"errors": {"503": 1.0}}))
    async with RiskScoreConnector(HttpSettings(base_url=api.url, max_attempts=2, backoff_base=0.001)) as risk:
        outcomes = await asyncio.gather(*(risk.score_batched(request(i)) for i in range(10)), return_exceptions=True)
    assert all(isinstance(o, TransientError) and o.status == 503 for o in outcomes)
    assert api.stats.requests["risk_batch"] == 2, "one batch call, retried once"


async def test_an_optional_risk_connector_falls_back_and_marks_the_result_degraded(api: SandboxServer) -> None:
    api.faults.set("risk", FaultSpec.parse({"outages": [{"duration_s": None}]}))
    fallback = RiskScore(50, "medium")
    breaker = BreakerSettings(window_size=2, minimum_calls=2, open_duration=60)
    async with RiskScoreConnector(
        HttpSettings(base_url=api.url, max_attempts=1), breaker=breaker, fallback=fallback
    ) as risk:
        results = [await risk.score(request(1)) for _ in range(3)]
    assert [r.source for r in results] == [Source.FALLBACK] * 3
    assert all(r.degraded and r.value == fallback for r in results)
    assert results[-1].reason is not None and results[-1].reason.startswith("CircuitOpenError")
    assert api.stats.requests["risk"] == 2
