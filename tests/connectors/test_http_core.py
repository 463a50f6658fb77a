"""The HTTP core against the real sandbox: backoff, Retry-After, budgets, allowlist, body limits, pooling."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict

import pytest

from connectors import HttpConnector, HttpSettings, PermanentError, TransientError
from connectors.http import CallOutcome
from sandbox.faults import FaultSpec
from sandbox.server import SandboxConfig, SandboxServer
from tests.connectors.conftest import SandboxFactory

SCORE = {"customer_id": "C000042", "amount_cents": 1999, "currency": "EUR"}


def gaps_by_request_id(api: SandboxServer, endpoint: str) -> dict[str, list[float]]:
    """Seconds between consecutive attempts of each call, grouped by its X-Request-Id."""
    arrivals: dict[str, list[float]] = defaultdict(list)
    for record in api.stats.of(endpoint):
        if "X-Request-Id" in record.headers:
            arrivals[record.headers["X-Request-Id"]].append(record.at)
    return {rid: [b - a for a, b in itertools.pairwise(times)] for rid, times in arrivals.items()}


async def test_backoff_delays_stay_within_their_full_jitter_bounds_and_spread_out(api: SandboxServer) -> None:
    api.faults.set("customers", FaultSpec.parse({"errors": {"503": 1.0}}))
    settings = HttpSettings(base_url=api.url, max_attempts=4, backoff_base=0.04, backoff_cap=0.1)
    bounds = [0.04, 0.08, 0.1]  # base * 2**(n-1), the third one capped
    calls = 25
    async with HttpConnector("customers", settings) as http:

        async def one(i: int) -> None:
            with pytest.raises(TransientError) as caught:
                await http.get_json("/v1/customers/{id}", headers={"X-Request-Id": str(i)}, id="C000001")
            assert caught.value.status == 503

        await asyncio.gather(*(one(i) for i in range(calls)))

    gaps = gaps_by_request_id(api, "customers")
    assert len(gaps) == calls and all(len(g) == 3 for g in gaps.values()), "four attempts per call"
    tolerance = 0.03  # scheduling on a shared 2-core machine
    for n, bound in enumerate(bounds):
        measured = [g[n] for g in gaps.values()]
        assert all(0 <= gap <= bound + tolerance for gap in measured), (n, bound, max(measured))
        # full jitter: waits are spread over [0, bound], not bunched at the bound
        assert min(measured) < 0.35 * bound and max(measured) > 0.65 * bound, (bound, sorted(measured))
        print(f"after attempt {n + 1}: bound {bound * 1000:.0f} ms, measured "
              f"{min(measured) * 1000:.1f}..{max(measured) * 1000:.1f} ms")


async def test_retry_after_in_seconds_is_obeyed(start_sandbox: SandboxFactory) -> None:
    async with (
        start_sandbox(SandboxConfig(risk_rate=1, risk_burst=1)) as api,
        HttpConnector("risk", HttpSettings(base_url=api.url, retry_after_cap=2)) as http,
    ):
        await http.post_json("/v1/risk-scores", SCORE, retry=True)  # takes the only token
        began = time.monotonic()
        answer = await http.post_json("/v1/risk-scores", SCORE, headers={"X-Request-Id": "late"}, retry=True)
        took = time.monotonic() - began
    assert answer["band"] in ("low", "medium", "high")
    [gap] = gaps_by_request_id(api, "risk")["late"]  # a 429 with Retry-After: 1, then success
    assert api.stats.throttled == 1
    assert 1.0 <= gap <= 1.15 and took < 1.3, (gap, took)
    print(f"Retry-After: 1 -> retried after {gap * 1000:.0f} ms")


async def test_retry_after_as_an_http_date_is_obeyed(start_sandbox: SandboxFactory) -> None:
    config = SandboxConfig(risk_rate=1, risk_burst=1, retry_after_format="date")
    async with (
        start_sandbox(config) as api,
        HttpConnector("risk", HttpSettings(base_url=api.url, retry_after_cap=3)) as http,
    ):
        await http.post_json("/v1/risk-scores", SCORE, retry=True)
        await http.post_json("/v1/risk-scores", SCORE, headers={"X-Request-Id": "late"}, retry=True)
    [gap] = gaps_by_request_id(api, "risk")["late"]  # not back before the date: a single 429
    assert api.stats.throttled == 1
    assert 0.9 <= gap <= 2.2, gap  # the date has one-second resolution and is rounded up
    print(f"Retry-After: <date> -> retried after {gap * 1000:.0f} ms")


async def test_a_retry_after_beyond_the_cap_ends_the_call_at_once_and_carries_the_wait(api: SandboxServer) -> None:
    api.faults.set("risk", FaultSpec.parse({"errors": {"429": 1.0}, "retry_after": 30}))
    async with HttpConnector("risk", HttpSettings(base_url=api.url, retry_after_cap=2, max_attempts=5)) as http:
        began = time.monotonic()
        with pytest.raises(TransientError) as caught:
            await http.post_json("/v1/risk-scores", SCORE, retry=True)
    assert time.monotonic() - began < 0.5
    assert caught.value.status == 429 and caught.value.retry_after == 30.0
    assert api.stats.requests["risk"] == 1


async def test_max_elapsed_bounds_a_call_however_many_attempts_remain(api: SandboxServer) -> None:
    api.faults.set("customers", FaultSpec.parse({
        "errors": {"503": 1.0}, "latency": {"distribution": "fixed", "ms": 50},
    }))
    settings = HttpSettings(base_url=api.url, max_attempts=100, backoff_base=0.05, backoff_cap=0.1, max_elapsed=0.5)
    async with HttpConnector("customers", settings) as http:
        began = time.monotonic()
        with pytest.raises(TransientError):
            await http.get_json("/v1/customers/{id}", id="C000001")
        took = time.monotonic() - began
    assert took <= 0.6, took
    assert 2 <= api.stats.requests["customers"] < 100


async def test_a_trickling_body_times_out_as_transient(api: SandboxServer) -> None:
    api.faults.set("fx", FaultSpec.parse({"slow_body": {"rate": 1.0, "chunk_bytes": 8, "interval_ms": 300}}))
    settings = HttpSettings(base_url=api.url, read_timeout=0.1, max_attempts=1)
    async with HttpConnector("fx", settings) as http:
        began = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            await http.get_json("/v1/fx-rates/{base}", base="EUR")
    assert time.monotonic() - began < 0.5


async def test_the_total_timeout_bounds_one_attempt(api: SandboxServer) -> None:
    api.faults.set("fx", FaultSpec.parse({"slow_body": {"rate": 1.0, "chunk_bytes": 8, "interval_ms": 40}}))
    settings = HttpSettings(base_url=api.url, read_timeout=1.0, total_timeout=0.3, max_attempts=1)
    async with HttpConnector("fx", settings) as http:
        began = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            await http.get_json("/v1/fx-rates/{base}", base="EUR")
    assert 0.25 <= time.monotonic() - began < 0.6


async def test_a_templated_url_that_would_leave_the_allowlist_is_refused_before_any_request(api: SandboxServer) -> None:
    async with HttpConnector("customers", HttpSettings(base_url=api.url)) as http:
        with pytest.raises(PermanentError, match="not the allowed host"):
            await http.get_json("@evil.example{path}", path="/v1/customers/C000001")
        with pytest.raises(PermanentError, match="not the allowed host"):
            await http.request("GET", "http://127.0.0.2:9/v1/customers/C000001")
        # a parameter cannot move the request elsewhere: it is encoded into one path segment
        with pytest.raises(PermanentError) as caught:
            await http.get_json("/v1/customers/{id}", id="@evil.example/../../admin/faults")
    assert caught.value.status == 404
    [arrived] = api.stats.of("customers")  # the refused ones never left the client
    assert arrived.path_qs == "/v1/customers/@evil.example%2F..%2F..%2Fadmin%2Ffaults"  # ('@' needs no escape here)


async def test_request_path_fills_the_template_from_a_mapping_and_keeps_every_check(api: SandboxServer) -> None:
    outcomes: list[CallOutcome] = []
    async with HttpConnector("customers", HttpSettings(base_url=api.url)) as http:
        http.add_call_observer(outcomes.append)
        # a placeholder named like an option fills the path; the route defaults to the template
        response = await http.request_path("GET", "/v1/customers/{headers}", {"headers": "C000001"})
        assert response.data["customer_id"] == "C000001" and response.url == f"{api.url}/v1/customers/C000001"
        with pytest.raises(PermanentError) as caught:  # encoded into one segment, whatever it holds
            await http.request_path("GET", "/v1/customers/{id}", {"id": "a/../../admin faults"})
        assert caught.value.status == 404
        with pytest.raises(PermanentError, match="not the allowed host"):
            await http.request_path("GET", "@evil.example{path}", {"path": "/v1/customers/C000001"})
    assert [(o.route, o.status) for o in outcomes] == [("/v1/customers/{headers}", 200), ("/v1/customers/{id}", 404)]
    assert [r.path_qs for r in api.stats.of("customers")] == [
        "/v1/customers/C000001", "/v1/customers/a%2F..%2F..%2Fadmin%20faults"]


async def test_an_extra_allowed_host_is_reachable(api: SandboxServer) -> None:
    settings = HttpSettings(base_url="http://localhost:1", allowed_hosts=(f"127.0.0.1:{api.port}",))
    async with HttpConnector("customers", settings) as http:
        response = await http.request("GET", f"{api.url}/v1/customers/C000001")
    assert response.data["customer_id"] == "C000001"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_body_is_refused(api: SandboxServer, chunked: bool) -> None:
    api.faults.set("fx", FaultSpec.parse({"oversized": {"rate": 1.0, "bytes": 300_000, "chunked": chunked}}))
    async with HttpConnector("fx", HttpSettings(base_url=api.url, max_response_bytes=50_000)) as http:
        with pytest.raises(PermanentError, match="exceeds the 50000-byte cap"):
            await http.get_json("/v1/fx-rates/{base}", base="EUR")
    assert api.stats.requests["fx"] == 1, "a permanent failure is not retried"


async def test_a_malformed_body_is_permanent(api: SandboxServer) -> None:
    api.faults.set("fx", FaultSpec.parse({"malformed_rate": 1.0}))
    async with HttpConnector("fx", HttpSettings(base_url=api.url)) as http:
        with pytest.raises(PermanentError, match="not JSON"):
            await http.get_json("/v1/fx-rates/{base}", base="EUR")


async def test_a_post_is_retried_only_with_an_idempotency_key_which_every_attempt_carries(
    start_sandbox: SandboxFactory,
) -> None:
    async with start_sandbox(SandboxConfig(seed=11)) as api:
        api.faults.set("risk", FaultSpec.parse({"errors": {"503": 0.5}}))
        settings = HttpSettings(base_url=api.url, max_attempts=8, backoff_base=0.001)
        async with HttpConnector("risk", settings) as http:
            for i in range(20):
                await http.post_json("/v1/risk-scores", SCORE, idempotency_key=f"event-{i}")
            attempts_with_keys = len(api.stats.of("risk"))
            api.faults.set("risk", FaultSpec.parse({"errors": {"503": 1.0}}))
            with pytest.raises(TransientError):
                await http.post_json("/v1/risk-scores", SCORE)  # no key: not safe to repeat
    keys = [r.headers.get("Idempotency-Key") for r in api.stats.of("risk")]
    assert attempts_with_keys > 20, "some calls needed a retry"
    assert set(keys[:attempts_with_keys]) == {f"event-{i}" for i in range(20)}
    assert keys[attempts_with_keys:] == [None], "the keyless POST was sent once"


async def test_sequential_calls_reuse_one_kept_alive_connection(api: SandboxServer) -> None:
    async with HttpConnector("customers", HttpSettings(base_url=api.url)) as http:
        for _ in range(5):
            await http.get_json("/v1/customers/{id}", id="C000001")
    assert len({r.peer_port for r in api.stats.of("customers")}) == 1


async def test_the_pool_never_opens_more_connections_than_its_limit(api: SandboxServer) -> None:
    api.faults.set("customers", FaultSpec.parse({"latency": {"distribution": "fixed", "ms": 30}}))
    async with HttpConnector("customers", HttpSettings(base_url=api.url, max_connections=3)) as http:
        await asyncio.gather(*(http.get_json("/v1/customers/{id}", id="C000001") for _ in range(15)))
    assert len({r.peer_port for r in api.stats.of("customers")}) == 3


async def test_observers_see_every_attempt_by_route_and_status_and_hooks_add_headers(api: SandboxServer) -> None:
    api.faults.set("customers", FaultSpec.parse({"errors": {"503": 1.0}}))
    outcomes: list[CallOutcome] = []
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with HttpConnector("customers", HttpSettings(base_url=api.url, max_attempts=2, backoff_base=0)) as http:
        http.add_call_observer(outcomes.append)
        http.add_header_hook(lambda headers: headers.update(traceparent=traceparent))
        with pytest.raises(TransientError):
            await http.get_json("/v1/customers/{id}", id="C000001")
        api.faults.clear("customers")
        await http.get_json("/v1/customers/{id}", id="C000001")
    assert [(o.route, o.status, o.attempt) for o in outcomes] == [
        ("/v1/customers/{id}", 503, 1), ("/v1/customers/{id}", 503, 2), ("/v1/customers/{id}", 200, 1),
    ]
    assert [r.headers.get("traceparent") for r in api.stats.of("customers")] == [traceparent] * 3
