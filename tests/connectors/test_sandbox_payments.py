"""The sandbox's payment APIs (accounts, geo-IP, fraud scores), against the real server on loopback."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from sandbox.payments import account_exists, account_for, fraud_score, geo_for
from sandbox.server import SandboxConfig, SandboxServer
from tests.connectors.conftest import SandboxFactory, get, post


def payment(n: int, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "payment_id": f"pay-{n}", "account_id": f"A{n:06d}", "amount_cents": 1_000 * n, "currency": "EUR",
        "country": "DE",
    }
    return {**item, **changes}


async def test_an_account_is_derived_from_its_id(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    status, account = await get(session, f"{api.url}/v1/accounts/A000123")
    assert status == 200 and account == account_for("A000123")
    assert set(account) == {"account_id", "holder", "country", "opened", "status"}
    assert account["account_id"] == "A000123" and account["status"] in ("active", "frozen")
    assert len(account["country"]) == 2 and len(account["opened"]) == 10


async def test_an_account_number_divisible_by_97_is_unknown(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    assert not account_exists("A000194") and account_exists("A000195")
    assert await get(session, f"{api.url}/v1/accounts/A000194") == (404, {"error": "account not found"})
    assert (await get(session, f"{api.url}/v1/accounts/A000195"))[0] == 200
    assert (await get(session, f"{api.url}/v1/accounts/not-an-id"))[0] == 404
    with pytest.raises(KeyError):
        account_for("A000194")


async def test_geo_answers_for_an_ipv4_address(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    status, geo = await get(session, f"{api.url}/v1/geo/81.2.69.160")
    assert status == 200 and geo == geo_for("81.2.69.160")
    assert geo["ip"] == "81.2.69.160" and len(geo["country"]) == 2 and geo["city"]
    assert isinstance(geo["asn"], int)


@pytest.mark.parametrize("ip", ["81.2.69", "81.2.69.256", "not-an-ip", "::1", "081.2.69.160"])
async def test_geo_answers_400_for_what_is_not_ipv4_text(
    api: SandboxServer, session: aiohttp.ClientSession, ip: str
) -> None:
    status, body = await get(session, f"{api.url}/v1/geo/{ip}")
    assert status == 400 and "error" in body
    with pytest.raises(ValueError):
        geo_for(ip)


async def test_a_fraud_score_is_derived_from_the_payment(api: SandboxServer, session: aiohttp.ClientSession) -> None:
    status, answer, _ = await post(session, f"{api.url}/v1/fraud/score", payment(5))
    assert status == 200 and answer == fraud_score(payment(5))
    assert answer["payment_id"] == "pay-5" and 0 <= answer["score"] <= 100
    assert answer["decision"] in ("allow", "review", "block")
    assert api.stats.fraud_scored == 1


@pytest.mark.parametrize("changes", [{"amount_cents": -1}, {"currency": "eur"}, {"currency": "EURO"}])
async def test_a_single_invalid_fraud_request_is_a_422(
    api: SandboxServer, session: aiohttp.ClientSession, changes: dict[str, Any]
) -> None:
    status, answer, _ = await post(session, f"{api.url}/v1/fraud/score", payment(5, **changes))
    assert status == 422 and "error" in answer


async def test_the_fraud_api_replays_an_idempotent_request_and_scores_it_once(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    url, key = f"{api.url}/v1/fraud/score", {"Idempotency-Key": "pay-7"}
    first = await post(session, url, payment(7), key)
    again = await post(session, url, payment(7), key)
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert first[2] is None and again[2] == "true"
    assert api.stats.idempotent_replays == 1 and api.stats.fraud_scored == 1
    assert [r.headers["Idempotency-Key"] for r in api.stats.of("fraud")] == ["pay-7", "pay-7"]
    status, answer, _ = await post(session, url, payment(7, amount_cents=99), key)
    assert status == 422 and "different request body" in answer["error"]


async def test_a_batch_scores_each_item_and_refuses_invalid_ones_per_item(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    items = [
        {"id": "a", **payment(1)},
        {"id": "b", **payment(2, amount_cents=-500)},
        {"id": "c", **payment(3, currency="Eur")},
        {"id": "d", **payment(4, country=None)},
    ]
    status, answer, _ = await post(session, f"{api.url}/v1/fraud/score/batch", {"items": items})
    assert status == 200
    results = answer["results"]
    assert [r["id"] for r in results] == ["a", "b", "c", "d"]
    for result, item in zip(results, items, strict=True):
        if item["id"] in ("b", "c"):
            assert result["error"]["status"] == 422 and result["error"]["message"]
            assert "score" not in result
        else:
            scored = fraud_score(item)
            assert result == {"id": item["id"], "score": scored["score"], "decision": scored["decision"]}
    assert api.stats.fraud_scored == 2


async def test_a_batch_above_100_items_or_without_items_is_refused(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    url = f"{api.url}/v1/fraud/score/batch"
    assert (await post(session, url, {"items": [{"id": str(n), **payment(n)} for n in range(1, 102)]}))[0] == 413
    assert (await post(session, url, {"items": [{"id": str(n), **payment(n)} for n in range(1, 101)]}))[0] == 200
    assert (await post(session, url, {"things": []}))[0] == 400


async def test_a_batch_replays_the_stored_answer_for_the_same_key_and_body(
    api: SandboxServer, session: aiohttp.ClientSession
) -> None:
    url, key = f"{api.url}/v1/fraud/score/batch", {"Idempotency-Key": "batch-1"}
    body = {"items": [{"id": "a", **payment(1)}, {"id": "b", **payment(2, amount_cents=-1)}]}
    first = await post(session, url, body, key)
    again = await post(session, url, body, key)
    assert first[0] == again[0] == 200 and first[1] == again[1] and again[2] == "true"
    assert api.stats.fraud_scored == 1 and api.stats.idempotent_replays == 1
    other = await post(session, url, body, {"Idempotency-Key": "batch-2"})
    assert other[0] == 200 and other[2] is None and api.stats.fraud_scored == 2
    # the same key on the single-score endpoint is a key of its own
    single = await post(session, f"{api.url}/v1/fraud/score", payment(1), key)
    assert single[0] == 200 and single[2] is None


@pytest.mark.parametrize(
    ("endpoint", "method", "path", "body"),
    [
        ("geo", "GET", "/v1/geo/81.2.69.160", None),
        ("fraud_batch", "POST", "/v1/fraud/score/batch", {"items": [{"id": "a", **payment(1)}]}),
    ],
)
async def test_an_outage_set_through_the_admin_endpoint_is_a_503(
    api: SandboxServer, session: aiohttp.ClientSession, endpoint: str, method: str, path: str, body: Any
) -> None:
    async def call() -> int:
        async with session.request(method, f"{api.url}{path}", json=body) as response:
            return response.status

    assert await call() == 200
    spec = {"outages": [{"start_s": 0, "duration_s": None, "status": 503}]}
    async with session.put(f"{api.url}/admin/faults/{endpoint}", json=spec) as put:
        assert put.status == 200
    assert await call() == 503
    assert (await get(session, f"{api.url}/v1/accounts/A000001"))[0] == 200, "other endpoints are unaffected"
    async with session.delete(f"{api.url}/admin/faults/{endpoint}") as deleted:
        assert deleted.status == 204
    assert await call() == 200
    assert api.stats.requests[endpoint] == 3


async def test_faults_for_the_payment_endpoints_can_be_set_at_start(
    start_sandbox: SandboxFactory, session: aiohttp.ClientSession
) -> None:
    faults: dict[str, dict[str, Any]] = {
        "accounts": {"errors": {"500": 1.0}}, "fraud": {"errors": {"429": 1.0}, "retry_after": 1},
    }
    async with start_sandbox(SandboxConfig(faults=faults)) as api:
        assert (await get(session, f"{api.url}/v1/accounts/A000001"))[0] == 500
        async with session.post(f"{api.url}/v1/fraud/score", json=payment(1)) as response:
            assert response.status == 429 and response.headers["Retry-After"] == "1"
        assert api.stats.fraud_scored == 0
