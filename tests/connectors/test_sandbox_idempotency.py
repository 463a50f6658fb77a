"""The risk API's idempotency against the real sandbox: a score (the API's effect) is given once per key.

The single endpoint's key is its ``Idempotency-Key`` header; a batch item's is its own
``idempotency_key`` field (``Api.item_keys`` gives a batch step one per event), else the header's
key with the item's position. Effects are counted by the sandbox (``risk_scored``,
``risk_effect_keys``), answers given again by ``idempotent_replays``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import pytest

from connectors.context import current_event_id
from sandbox.risk import risk_score
from sandbox.server import SandboxConfig, SandboxServer
from streams import Api, Batch, Pipeline
from streams.api import ApiSettings
from tests.connectors.conftest import SandboxFactory

ORDER = {"customer_id": "C000042", "amount_cents": 1999, "currency": "EUR"}


def order(n: int) -> dict[str, Any]:
    return {"customer_id": f"C{n:06d}", "amount_cents": 1000 * n, "currency": "EUR"}


def score_of(item: dict[str, Any]) -> dict[str, Any]:
    answer, problem = risk_score(item)
    assert answer is not None, problem
    return answer


async def post(session: aiohttp.ClientSession, url: str, body: Any,
               key: str | None = None) -> tuple[int, Any, str | None]:
    headers = {"Idempotency-Key": key} if key is not None else None
    async with session.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Idempotent-Replayed")


async def batch(session: aiohttp.ClientSession, api: SandboxServer, items: list[dict[str, Any]],
                key: str | None = "batch-1") -> dict[str, dict[str, Any]]:
    status, body, _ = await post(session, f"{api.url}/v1/risk-scores/batch", {"items": items}, key)
    assert status == 200, body
    return {entry["id"]: entry for entry in body["results"]}


async def test_the_same_key_twice_on_the_single_endpoint_scores_once(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    first = await post(session, f"{api.url}/v1/risk-scores", ORDER, "evt-1:risk:/v1/risk-scores")
    again = await post(session, f"{api.url}/v1/risk-scores", ORDER, "evt-1:risk:/v1/risk-scores")
    assert first == (200, score_of(ORDER), None)
    assert again == (200, score_of(ORDER), "true")
    assert api.stats.risk_scored == 1 and api.stats.idempotent_replays == 1
    assert list(api.stats.risk_effect_keys) == ["evt-1:risk:/v1/risk-scores"]


async def test_an_item_key_is_scored_once_whatever_batch_it_comes_in(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    # evt-2 is retried in another batch, at another position, with other companions and another
    # batch key: its own key still finds its first score
    first = await batch(session, api, [{"id": "0", "idempotency_key": "evt-1", **order(1)},
                                       {"id": "1", "idempotency_key": "evt-2", **order(2)}], key="batch-a")
    second = await batch(session, api, [{"id": "0", "idempotency_key": "evt-3", **order(3)},
                                        {"id": "1", "idempotency_key": "evt-4", **order(4)},
                                        {"id": "2", "idempotency_key": "evt-2", **order(2)}], key="batch-b")
    assert first["1"] == {"id": "1", **score_of(order(2))}
    assert second["2"] == {"id": "2", **score_of(order(2))}, "the item's own id, with its first score"
    assert second["0"] == {"id": "0", **score_of(order(3))}
    assert api.stats.risk_scored == 4 and api.stats.idempotent_replays == 1
    assert Counter(api.stats.risk_effect_keys) == {"evt-1": 1, "evt-2": 1, "evt-3": 1, "evt-4": 1}


async def test_a_retried_batch_without_item_keys_is_scored_once_by_its_request_key(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    items = [{"id": str(n), **order(n)} for n in range(1, 6)]
    url = f"{api.url}/v1/risk-scores/batch"
    first = await post(session, url, {"items": items}, "batch-x")
    again = await post(session, url, {"items": items}, "batch-x")
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert (first[2], again[2]) == (None, "true"), "every item replayed: the answer says so"
    assert api.stats.risk_scored == 5 and api.stats.idempotent_replays == 5
    assert sorted(k for k in api.stats.risk_effect_keys if k) == [f"batch-x#{n}" for n in range(5)]


async def test_one_key_twice_in_one_batch_is_one_effect(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    results = await batch(session, api, [{"id": "a", "idempotency_key": "evt-9", **order(9)},
                                         {"id": "b", "idempotency_key": "evt-9", **order(9)}])
    assert results["a"] == {"id": "a", **score_of(order(9))} and results["b"] == {"id": "b", **score_of(order(9))}
    assert api.stats.risk_scored == 1 and api.stats.idempotent_replays == 1


async def test_a_key_reused_for_another_request_is_a_conflict_scored_as_its_own(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    """The sandbox never answers one order with another's score, and counts the misuse."""
    await batch(session, api, [{"id": "0", "idempotency_key": "evt-5", **order(5)}])
    results = await batch(session, api, [{"id": "0", "idempotency_key": "evt-5", **order(6)}])
    assert results["0"] == {"id": "0", **score_of(order(6))}
    assert api.stats.idempotency_conflicts == 1 and api.stats.risk_scored == 2 and api.stats.idempotent_replays == 0


async def test_a_bad_item_key_fails_that_item_alone(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    results = await batch(session, api, [{"id": "0", "idempotency_key": "", **order(1)},
                                         {"id": "1", "idempotency_key": 7, **order(2)},
                                         {"id": "2", "idempotency_key": "k" * 256, **order(3)},
                                         {"id": "3", "idempotency_key": "evt-4", **order(4)}])
    assert [results[str(n)].get("error", {}).get("status") for n in range(4)] == [422, 422, 422, None]
    assert api.stats.risk_scored == 1


async def test_an_invalid_request_is_no_effect_and_not_remembered(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    bad = {**ORDER, "amount_cents": -1}
    assert (await post(session, f"{api.url}/v1/risk-scores", bad, "evt-bad"))[0] == 422
    assert (await post(session, f"{api.url}/v1/risk-scores", ORDER, "evt-bad"))[:2] == (200, score_of(ORDER))
    assert api.stats.risk_scored == 1 and api.stats.idempotency_conflicts == 0


async def test_with_keys_required_a_keyless_post_is_refused_and_changes_nothing(
    start_sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    async with start_sandbox(SandboxConfig(require_idempotency_keys=True)) as api:
        single = await post(session, f"{api.url}/v1/risk-scores", ORDER)
        many = await post(session, f"{api.url}/v1/risk-scores/batch",
                          {"items": [{"id": "0", "idempotency_key": "evt-1", **order(1)}]})
        assert single[0] == many[0] == 400 and "Idempotency-Key" in single[1]["error"]
        assert api.stats.risk_scored == 0 and api.stats.missing_idempotency_keys == 2
        assert (await post(session, f"{api.url}/v1/risk-scores", ORDER, "evt-1"))[0] == 200
        async with session.get(f"{api.url}/v1/risk-scores/health") as health:
            assert health.status == 200, "a read needs no key"
        async with session.get(f"{api.url}/admin/stats") as response:
            stats = await response.json()
    assert stats["risk_scored"] == 1 and stats["missing_idempotency_keys"] == 2


async def test_a_batch_step_sends_each_event_its_own_item_key_and_replays_score_once(
    start_sandbox: SandboxFactory,
) -> None:
    """``Api.item_keys`` in a batch step of a started pipeline, against a sandbox that requires keys."""
    async with start_sandbox(SandboxConfig(require_idempotency_keys=True)) as api:
        risk = Api("risk", base_url=api.url, retries=1)
        risk.bind(ApiSettings.from_environment(risk, environ={}))
        pipeline = Pipeline("idempotency-test", source="in", sink="out", input_schema="In", output_schema="Out")

        @pipeline.step(risk, batch=Batch(max_size=50, linger=0.05))
        async def score(event: list[dict[str, Any]]) -> list[Any]:
            keys = risk.item_keys("/v1/risk-scores/batch")
            items = [{"id": str(n), "idempotency_key": key, **{f: e[f] for f in ORDER}}
                     for n, (e, key) in enumerate(zip(event, keys, strict=True))]
            answer = await risk.post("/v1/risk-scores/batch", {"items": items})
            return [{"key": item["idempotency_key"], **result}
                    for item, result in zip(items, answer["results"], strict=True)]

        @pipeline.output
        def out(event: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
            return {"event_id": event["event_id"], **score}

        async def process(event: dict[str, Any]) -> dict[str, Any] | None:
            current_event_id.set(event["event_id"])  # as the worker does, in this event's task
            return await pipeline.process(event)

        events = [{"event_id": f"evt-{n}", **order(n)} for n in range(1, 31)]
        await pipeline.start()
        try:
            first = await asyncio.gather(*(process(e) for e in events))
            # a replay of some events, batched with new ones: the replayed ones are not scored again
            replayed = events[::3] + [{"event_id": f"evt-{n}", **order(n)} for n in range(31, 41)]
            second = await asyncio.gather(*(process(e) for e in replayed))
        finally:
            await pipeline.close()

    for event, output in zip(events + replayed, first + second, strict=True):
        assert output is not None and output["key"] == f"{event['event_id']}:risk:/v1/risk-scores/batch"
        assert output["score"] == score_of(event)["score"]
    requests = api.stats.of("risk_batch")
    assert requests and all(r.headers.get("Idempotency-Key", "").startswith("batch-") for r in requests)
    assert api.stats.risk_scored == 40 and api.stats.idempotent_replays == len(events[::3])
    assert Counter(api.stats.risk_effect_keys) == {f"evt-{n}:risk:/v1/risk-scores/batch": 1 for n in range(1, 41)}


async def test_item_keys_outside_a_step_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="pipeline step"):
        Api("risk", base_url="http://127.0.0.1:1").item_keys("/v1/risk-scores/batch")
