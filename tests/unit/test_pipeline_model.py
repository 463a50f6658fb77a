"""The public pipeline model: steps, their graph, the output, and run_one with fake APIs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams import Api, Batch, Permanent, Pipeline, PipelineError, Transient
from streams.failures import FailureKind


class Fake:
    """A stand-in API: answers GETs from a table of path -> value (or exception)."""

    def __init__(self, answers: dict[str, Any], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.calls: list[str] = []

    async def get(self, path: str, *, query: Any = None, **params: Any) -> Any:
        filled = path.format(**params)
        self.calls.append(filled)
        await asyncio.sleep(self.delay)
        answer = self.answers[filled]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def post(self, path: str, json: Any = None, **params: Any) -> Any:
        self.calls.append(f"POST {path}")
        return self.answers[path]


def payments() -> tuple[Pipeline, Api, Api]:
    accounts = Api("accounts", "http://127.0.0.1:1")
    geo = Api("geo", "http://127.0.0.1:1")
    pipeline = Pipeline("payments-test", source="in", sink="out", input_schema="In", output_schema="Out")

    @pipeline.step(accounts)
    async def account(event: dict[str, Any]) -> Any:
        return await accounts.get("/v1/accounts/{id}", id=event["account_id"])

    @pipeline.step(geo, required=False, fallback={"country": "??"})
    async def location(event: dict[str, Any]) -> Any:
        return await geo.get("/v1/geo/{ip}", ip=event["ip"])

    @pipeline.step()
    async def home(event: dict[str, Any], account: dict[str, Any], location: dict[str, Any]) -> bool:
        return bool(account["country"] == location["country"])

    @pipeline.output
    def checked(event: dict[str, Any], account: Any, location: Any, home: bool, degraded: list[str]) -> Any:
        if event.get("skip"):
            return None
        return {**event, "holder": account["holder"], "home": home, "reasons": list(degraded)}

    return pipeline, accounts, geo


EVENT = {"event_id": "e1", "account_id": "A1", "ip": "1.2.3.4"}


async def test_independent_steps_run_concurrently_and_a_dependent_step_waits_for_them() -> None:
    pipeline, _, _ = payments()
    accounts = Fake({"/v1/accounts/A1": {"holder": "Ada", "country": "DE"}}, delay=0.2)
    geo = Fake({"/v1/geo/1.2.3.4": {"country": "DE"}}, delay=0.2)
    started = asyncio.get_running_loop().time()
    outcome = await pipeline.run_one(EVENT, apis={"accounts": accounts, "geo": geo})
    elapsed = asyncio.get_running_loop().time() - started
    assert outcome.destination == "output"
    assert outcome.output == {**EVENT, "holder": "Ada", "home": True, "reasons": []}
    assert elapsed < 0.35, f"two 0.2 s steps took {elapsed:.2f} s: they did not overlap"
    assert [line.split(" ")[0] for line in pipeline.describe()] == ["1.", "1.", "2."]


async def test_an_optional_step_that_fails_transiently_falls_back_and_marks_the_output_degraded() -> None:
    pipeline, _, _ = payments()
    accounts = Fake({"/v1/accounts/A1": {"holder": "Ada", "country": "DE"}})
    geo = Fake({"/v1/geo/1.2.3.4": Transient("HTTP 503", status=503, api="geo")})
    outcome = await pipeline.run_one(EVENT, apis={"accounts": accounts, "geo": geo})
    assert outcome.output is not None and outcome.output["home"] is False
    assert outcome.degraded == ("location: Transient: HTTP 503",)
    assert outcome.output["reasons"] == ["location: Transient: HTTP 503"]


async def test_a_required_step_fails_the_event_with_its_classification() -> None:
    pipeline, _, _ = payments()
    geo = Fake({"/v1/geo/1.2.3.4": {"country": "DE"}})
    missing = await pipeline.run_one(EVENT, apis={
        "accounts": Fake({"/v1/accounts/A1": Permanent("HTTP 404", status=404, api="accounts")}), "geo": geo})
    assert missing.destination == "dlq"
    assert missing.failure is not None and missing.failure.kind is FailureKind.PERMANENT
    assert (missing.failure.connector, missing.failure.status) == ("accounts", 404)
    down = await pipeline.run_one(EVENT, apis={
        "accounts": Fake({"/v1/accounts/A1": Transient("HTTP 503", status=503, api="accounts")}), "geo": geo})
    assert down.destination == "retry"
    bug = await pipeline.run_one({**EVENT, "account_id": "A2"}, apis={"accounts": Fake({}), "geo": geo})
    assert bug.failure is not None and bug.failure.kind is FailureKind.PERMANENT
    assert bug.failure.error_class == "KeyError"


async def test_an_output_of_none_filters_the_event() -> None:
    pipeline, _, _ = payments()
    outcome = await pipeline.run_one({**EVENT, "skip": True}, apis={
        "accounts": Fake({"/v1/accounts/A1": {"holder": "Ada", "country": "DE"}}),
        "geo": Fake({"/v1/geo/1.2.3.4": {"country": "DE"}})})
    assert outcome.destination == "filtered" and outcome.output is None


def test_a_step_that_depends_on_an_unknown_step_is_named() -> None:
    pipeline = Pipeline("p", source="a", sink="b", input_schema="In", output_schema="Out")

    @pipeline.step()
    async def score(event: Any, acount: Any) -> None: ...

    pipeline.output(lambda event, score: event)
    with pytest.raises(PipelineError, match=r"score step depends on unknown step 'acount' \(known: event, score\)"):
        pipeline.check()


def test_a_cycle_is_named() -> None:
    pipeline = Pipeline("p", source="a", sink="b", input_schema="In", output_schema="Out")

    @pipeline.step()
    async def first(event: Any, second: Any) -> None: ...

    @pipeline.step()
    async def second(event: Any, first: Any) -> None: ...

    pipeline.output(lambda event: event)
    with pytest.raises(PipelineError, match="first -> second -> first"):
        pipeline.check()


def test_a_pipeline_without_output_is_refused() -> None:
    pipeline = Pipeline("p", source="a", sink="b", input_schema="In", output_schema="Out")
    with pytest.raises(PipelineError, match="has no output"):
        pipeline.check()


async def test_a_batch_step_gets_lists_and_each_item_fails_alone() -> None:
    fraud = Api("fraud", "http://127.0.0.1:1")
    pipeline = Pipeline("p", source="a", sink="b", input_schema="In", output_schema="Out")

    @pipeline.step(fraud, batch=Batch(max_size=10, linger=0.05))
    async def score(event: list[dict[str, Any]]) -> list[Any]:
        return [Permanent("negative amount", status=422, api="fraud") if e["amount"] < 0 else e["amount"] * 2
                for e in event]

    pipeline.output(lambda event, score: {**event, "score": score})
    await pipeline.start()
    try:
        outcomes = await asyncio.gather(*(pipeline.process({"amount": n}) for n in (1, 2, -3, 4)),
                                        return_exceptions=True)
    finally:
        await pipeline.close()
    assert outcomes[0] == {"amount": 1, "score": 2} and outcomes[3] == {"amount": 4, "score": 8}
    assert isinstance(outcomes[2], Permanent) and outcomes[2].status == 422
    one = await pipeline.run_one({"amount": 5})
    assert one.output == {"amount": 5, "score": 10}


async def test_an_api_without_a_url_names_its_variable() -> None:
    api = Api("geo-ip")
    with pytest.raises(ValueError, match="STREAMS_API_GEO_IP_URL"):
        api.bind()


def test_the_environment_overrides_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.api import ApiSettings

    api = Api("fraud", "http://code.example:80", rate_limit=10, timeout=2.0)
    monkeypatch.setenv("STREAMS_API_FRAUD_URL", "http://env.example:81")
    monkeypatch.setenv("STREAMS_API_FRAUD_RATE_LIMIT", "55")
    settings = ApiSettings.from_environment(api)
    assert (settings.base_url, settings.rate_limit, settings.timeout) == ("http://env.example:81", 55.0, 2.0)
    monkeypatch.setenv("STREAMS_API_FRAUD_RATE_LIMIT", "many")
    with pytest.raises(ValueError, match="STREAMS_API_FRAUD_RATE_LIMIT must be a number"):
        ApiSettings.from_environment(api)
