"""Pipelines written in YAML (streams.config): compiled into a Pipeline, run with fake APIs, and
every mistake named with its file, line and key."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from streams import Permanent, Pipeline, Transient
from streams.api import fakes
from streams.config import ConfigError, compile_config, load_config
from streams.failures import FailureKind
from streams.serde.avro import AvroSerde
from streams.serde.registry import EmbeddedRegistry

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "payments" / "pipeline.yaml"


class Fake:
    """A stand-in API: GET answers by filled path, POST answers by a function of the body."""

    def __init__(self, answers: dict[str, Any] | None = None, post: Any = None) -> None:
        self.answers = answers or {}
        self.answer_post = post
        self.gets: list[tuple[str, dict[str, Any]]] = []
        self.posts: list[tuple[str, Any]] = []

    async def get(self, path: str, *, query: Any = None, **params: Any) -> Any:
        self.gets.append((path, params))
        answer = self.answers[path.format(**params)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def post(self, path: str, json: Any = None, **params: Any) -> Any:
        self.posts.append((path.format(**params), json))
        answer = self.answer_post(json) if callable(self.answer_post) else self.answer_post
        if isinstance(answer, Exception):
            raise answer
        return answer


PIPELINE = """\
pipeline: payments-test
source: payments
sink: payments.checked
input_schema: test.Payment
output_schema: test.CheckedPayment
key: none
apis:
  accounts:
    base_url: http://127.0.0.1:1
    cache: {ttl: 60}
  geo: {base_url: "http://127.0.0.1:1"}
  fraud: {}
  notes: {}
steps:
  account:
    api: accounts
    get: /v1/accounts/{account_id}
    pick: [holder, country]
    into: holder_account
    permanent_on: [503]
  location:
    api: geo
    get: /v1/geo/{ip}
    required: false
    fallback: null
  fraud:
    api: fraud
    post: /v1/fraud/score/batch
    body: {payment_id: "{payment_id}", amount_cents: "{amount_cents}", country: "{account.country}",
           label: "{currency} {amount_cents} from {location.country}", city: "{location.city}"}
    batch: {max_size: 10, linger: 0, items: payments, results: scores}
    pick: [score]
  note:
    api: notes
    post: /v1/notes/{account.holder}
    body: [fixed, "{payment_id}"]
  stamp:
    transform: tests.unit.test_config_yaml:stamp
output:
  fields: {pipeline: payments-test, version: 2}
  transform: tests.unit.test_config_yaml:finish
"""

EVENT = {"event_id": "e1", "payment_id": "p1", "account_id": "A/1", "amount_cents": 1250, "currency": "EUR",
         "ip": "1.2.3.4"}


def stamp(event: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """A transform step: sees the event and the results of the steps above it."""
    if event.get("amount_cents", 0) > 1_000_000:
        raise Permanent("too large to stamp")
    return {"steps": sorted(results), "fraud": results["fraud"]}


async def finish(record: dict[str, Any], event: dict[str, Any], results: dict[str, Any]) -> dict[str, Any] | None:
    """The output transform: async, may drop the event."""
    if event.get("currency") == "XXX":
        return None
    return {**record, "result_names": sorted(results)}


def scores(body: Any) -> dict[str, Any]:
    return {"scores": [{"id": item["id"], "score": 7, "extra": True} for item in body["payments"]]}


def apis(**overrides: Any) -> dict[str, Any]:
    fakes_by_name: dict[str, Any] = {
        "accounts": Fake({"/v1/accounts/A/1": {"holder": "Ada", "country": "DE", "status": "active"}}),
        "geo": Fake({"/v1/geo/1.2.3.4": {"country": "FR", "city": "Paris"}}),
        "fraud": Fake(post=scores),
        "notes": Fake(post={"ok": True}),
    }
    fakes_by_name.update(overrides)
    return fakes_by_name


def compiled(text: str = PIPELINE, tmp_path: Path | None = None) -> Pipeline:
    return compile_config(text, (tmp_path or Path("/nonexistent")) / "payments.yaml")


async def test_a_yaml_pipeline_runs_its_steps_and_builds_the_output() -> None:
    pipeline = compiled()
    fake = apis()
    outcome = await pipeline.run_one(EVENT, apis=fake)
    assert outcome.destination == "output", outcome.failure
    assert outcome.output == {
        **EVENT,
        "holder_account": {"holder": "Ada", "country": "DE"},  # pick, into
        "location": {"country": "FR", "city": "Paris"},  # no pick: the whole answer
        "fraud": {"score": 7},
        "note": {"ok": True},
        "stamp": {"steps": ["account", "fraud", "location", "note"], "fraud": {"score": 7}},
        "pipeline": "payments-test", "version": 2,  # output.fields
        "result_names": ["account", "fraud", "location", "note", "stamp"],  # output.transform
    }
    # A path placeholder is an Api parameter (percent-encoded by the Api), the template kept readable.
    assert fake["accounts"].gets == [("/v1/accounts/{account_id}", {"account_id": "A/1"})]
    # "{x}" keeps the value's type; inside longer text values are written as text.
    [(path, body)] = fake["fraud"].posts
    assert path == "/v1/fraud/score/batch"
    assert body == {"payments": [{"id": "0", "payment_id": "p1", "amount_cents": 1250, "country": "DE",
                                  "label": "EUR 1250 from FR", "city": "Paris"}]}
    # {account.holder} in a path: filled from the account step's result.
    assert fake["notes"].posts == [("/v1/notes/Ada", ["fixed", "p1"])]
    assert pipeline.describe() == [
        "1. account (required, api accounts)",
        "1. location (optional, api geo)",
        "2. fraud (required, batch, api fraud) after account, location",
        "2. note (required, api notes) after account",
        "3. stamp (required) after account, location, fraud, note",
    ]
    assert [api.name for api in pipeline.apis] == ["accounts", "geo", "fraud", "notes"]
    assert pipeline.ordered is False and pipeline.schemas_dir is None


async def test_an_optional_step_falls_back_and_marks_the_output_degraded() -> None:
    pipeline = compiled()
    fake = apis(geo=Fake({"/v1/geo/1.2.3.4": Transient("HTTP 503", status=503, api="geo")}))
    outcome = await pipeline.run_one(EVENT, apis=fake)
    assert outcome.destination == "output", outcome.failure
    assert outcome.degraded == ("location: Transient: HTTP 503",)
    assert outcome.output is not None and outcome.output["location"] is None
    # A field of a null fallback is null: as an exact placeholder, and as text.
    [(_, body)] = fake["fraud"].posts
    assert body["payments"][0]["city"] is None and body["payments"][0]["label"] == "EUR 1250 from "
    # A permanent failure of an optional step still fails the event.
    refused = await pipeline.run_one(EVENT, apis=apis(geo=Fake({"/v1/geo/1.2.3.4": Permanent("HTTP 400", status=400)})))
    assert refused.destination == "dlq"


async def test_permanent_on_turns_those_transient_statuses_permanent_only() -> None:
    pipeline = compiled()
    unavailable = await pipeline.run_one(EVENT, apis=apis(accounts=Fake({
        "/v1/accounts/A/1": Transient("HTTP 503", status=503, api="accounts")})))
    assert unavailable.destination == "dlq"
    assert unavailable.failure is not None and unavailable.failure.kind is FailureKind.PERMANENT
    assert (unavailable.failure.connector, unavailable.failure.status) == ("accounts", 503)
    down = await pipeline.run_one(EVENT, apis=apis(accounts=Fake({
        "/v1/accounts/A/1": Transient("HTTP 502", status=502, api="accounts")})))
    assert down.destination == "retry"
    missing = await pipeline.run_one(EVENT, apis=apis(accounts=Fake({
        "/v1/accounts/A/1": Permanent("HTTP 404", status=404, api="accounts")})))
    assert missing.destination == "dlq" and missing.failure is not None and missing.failure.status == 404


@pytest.mark.parametrize(("entry", "destination", "status"), [
    ({"error": {"status": 422, "message": "amount_cents must be a non-negative integer"}}, "dlq", 422),
    ({"error": {"status": 503}}, "retry", 503),
    ({"error": {"status": 429}}, "retry", 429),
    (None, "dlq", None),  # no entry for the item
])
async def test_a_batch_item_error_fails_its_event(entry: dict[str, Any] | None, destination: str,
                                                  status: int | None) -> None:
    pipeline = compiled()
    answer = {"scores": [] if entry is None else [{"id": "0", **entry}]}
    outcome = await pipeline.run_one(EVENT, apis=apis(fraud=Fake(post=answer)))
    assert outcome.destination == destination
    assert outcome.failure is not None
    assert (outcome.failure.connector, outcome.failure.status) == ("fraud", status)


async def test_a_batch_of_many_events_is_matched_back_by_id() -> None:
    pipeline = compiled()
    step = pipeline.steps["fraud"]
    assert step.batch is not None and (step.batch.max_size, step.batch.linger) == (10, 0)
    fraud = Fake(post={"scores": [  # out of order, one failed, one missing
        {"id": "2", "score": 3}, {"id": "0", "score": 1}, {"id": "1", "error": {"status": 422}}]})
    events = [{**EVENT, "payment_id": f"p{n}"} for n in range(4)]
    accounts = [{"country": "DE"}] * 4
    token = fakes.set({"fraud": fraud})
    try:
        results = await step.fn(events, accounts, [None] * 4)
    finally:
        fakes.reset(token)
    assert results[0] == {"score": 1} and results[2] == {"score": 3}
    assert isinstance(results[1], Permanent) and results[1].status == 422
    assert isinstance(results[3], Permanent) and "no result for item 3" in str(results[3])
    [(_, body)] = fraud.posts
    assert [item["id"] for item in body["payments"]] == ["0", "1", "2", "3"]
    assert [item["payment_id"] for item in body["payments"]] == ["p0", "p1", "p2", "p3"]


async def test_transforms_may_fail_the_event_or_drop_it() -> None:
    pipeline = compiled()
    dropped = await pipeline.run_one({**EVENT, "currency": "XXX"}, apis=apis())
    assert dropped.destination == "filtered"
    refused = await pipeline.run_one({**EVENT, "amount_cents": 2_000_000}, apis=apis())
    assert refused.destination == "dlq" and refused.failure is not None
    assert refused.failure.error_class == "Permanent"


async def test_a_field_the_event_lacks_fails_it_permanently() -> None:
    pipeline = compiled()
    event = {key: value for key, value in EVENT.items() if key != "ip"}
    outcome = await pipeline.run_one(event, apis=apis())
    assert outcome.destination == "dlq" and outcome.failure is not None
    assert "the event has no field 'ip'" in outcome.failure.message


async def test_a_picked_field_the_answer_lacks_fails_the_event_permanently() -> None:
    pipeline = compiled()
    outcome = await pipeline.run_one(EVENT, apis=apis(accounts=Fake({"/v1/accounts/A/1": {"holder": "Ada"}})))
    assert outcome.destination == "dlq" and outcome.failure is not None
    assert "the answer has no field 'country'" in outcome.failure.message


# -- mistakes, named with their file and line -----------------------------------------------------------


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        compile_config(text, Path("/somewhere/payments.yaml"))
    return str(caught.value)


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def test_an_unknown_key_is_named_with_its_line_and_a_suggestion() -> None:
    text = PIPELINE.replace("    get: /v1/accounts/{account_id}", "    gett: /v1/accounts/{account_id}")
    line = line_of(text, "gett:")
    assert error_of(text) == f"/somewhere/payments.yaml:{line}: steps.account.gett: unknown key (did you mean 'get'?)"
    text = PIPELINE.replace("key: none", "keys: none")
    assert error_of(text).startswith(f"/somewhere/payments.yaml:{line_of(text, 'keys:')}: keys: unknown key "
                                     f"(did you mean 'key'?)")
    text = PIPELINE.replace("cache: {ttl: 60}", "cache: {tll: 60}")
    assert error_of(text).startswith(f"/somewhere/payments.yaml:{line_of(text, 'tll')}: apis.accounts.cache.tll: "
                                     f"unknown key")


@pytest.mark.parametrize(("old", "new", "needle", "message"), [
    ("    required: false", "    required: maybe", "maybe", "steps.location.required: expected true or false, "
                                                              "got the text 'maybe'"),
    ("max_size: 10", "max_size: ten", "ten", "steps.fraud.batch.max_size: expected a whole number, got the text 'ten'"),
    ("max_size: 10", "max_size: 0", "max_size", "steps.fraud.batch.max_size: must be at least 1, not 0"),
    ("pick: [score]", "pick: score", "pick: score", "steps.fraud.pick: expected a list, got the text 'score'"),
    ("source: payments", "source: [payments]", "source:", "source: expected text, got a list"),
    ("permanent_on: [503]", "permanent_on: [five]", "permanent_on", "steps.account.permanent_on[0]: expected a whole "
                                                                     "number, got the text 'five'"),
    ("cache: {ttl: 60}", "cache: 60", "cache: 60", "apis.accounts.cache: expected a mapping, got the number 60"),
    ("key: none", "key: random", "key:", "key: expected record or none, got 'random'"),
])
def test_a_wrong_type_is_named_with_its_line(old: str, new: str, needle: str, message: str) -> None:
    assert old in PIPELINE
    text = PIPELINE.replace(old, new)
    assert error_of(text) == f"/somewhere/payments.yaml:{line_of(text, needle)}: {message}"


def test_an_unknown_api_is_named() -> None:
    text = PIPELINE.replace("    api: accounts", "    api: acounts")
    assert error_of(text) == (f"/somewhere/payments.yaml:{line_of(text, 'acounts')}: steps.account.api: "
                              f"unknown api 'acounts' (did you mean 'accounts'?)")


def test_an_unknown_step_reference_is_named() -> None:
    text = PIPELINE.replace('"{account.country}"', '"{acount.country}"')
    assert error_of(text) == (f"/somewhere/payments.yaml:{line_of(text, 'acount.country')}: steps.fraud.body.country: "
                              f"{{acount.country}}: unknown step 'acount' (did you mean 'account'?)")


@pytest.mark.parametrize("key", ["pipeline", "source", "sink", "input_schema", "output_schema", "steps"])
def test_a_missing_required_key_is_named(key: str) -> None:
    text = re.sub(rf"(?m)^{key}:.*\n" + ("(  .*\n)*" if key == "steps" else ""), "", PIPELINE)
    assert error_of(text) == f"/somewhere/payments.yaml:1: {key}: missing (required)"


def test_a_transform_that_does_not_import_is_named() -> None:
    text = PIPELINE.replace("tests.unit.test_config_yaml:stamp", "tests.unit.no_such_module:stamp")
    message = error_of(text)
    assert message.startswith(f"/somewhere/payments.yaml:{line_of(text, 'no_such_module')}: steps.stamp.transform: "
                              f"cannot import 'tests.unit.no_such_module' for 'tests.unit.no_such_module:stamp'")
    text = PIPELINE.replace("tests.unit.test_config_yaml:finish", "tests.unit.test_config_yaml:finnish")
    assert error_of(text) == (f"/somewhere/payments.yaml:{line_of(text, 'finnish')}: output.transform: "
                              f"'tests.unit.test_config_yaml:finnish': module 'tests.unit.test_config_yaml' "
                              f"has no 'finnish'")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("    required: false\n    fallback: null", "    fallback: null", "a fallback is for optional steps"),
    ("    get: /v1/geo/{ip}", "    get: /v1/geo/{ip:>5}", "a placeholder is {field} or {step.field}"),
    ("    get: /v1/geo/{ip}", "    get: /v1/geo/{ip", "expected '}' before end of string"),
    ("    get: /v1/geo/{ip}", "    get: /v1/geo/{location.ip}", "step 'location' cannot use its own result"),
    ("    get: /v1/geo/{ip}", "    post: /v1/geo/{ip}\n    get: /v1/geo/{ip}", "not get and post"),
    ("post: /v1/fraud/score/batch", "post: /v1/fraud/{payment_id}", "a batch step calls one path for many events"),
    ("  stamp:\n", "  event:\n", "a step name must be a Python identifier other than event and degraded"),
    ("    into: holder_account", "    into: location", "step 'account' already writes output field 'location'"),
    ("  geo: {base_url:", "  geo: {base_url: ftp://x, timeout:", "expected an http(s):// URL"),
])
def test_other_mistakes_are_named(old: str, new: str, message: str) -> None:
    assert old in PIPELINE
    assert message in error_of(PIPELINE.replace(old, new))


def test_a_cycle_comes_from_the_pipeline_check_with_the_file() -> None:
    text = PIPELINE.replace("    get: /v1/accounts/{account_id}", "    get: /v1/accounts/{note.id}")
    assert error_of(text) == (f"/somewhere/payments.yaml:{line_of(text, 'steps:')}: steps: pipeline 'payments-test': "
                              f"steps account -> note -> account depend on each other in a cycle")


def test_yaml_syntax_errors_and_duplicates_have_lines() -> None:
    assert error_of("pipeline: [a\nsource: b\n").startswith("/somewhere/payments.yaml:2: not valid YAML")
    text = PIPELINE.replace("sink: payments.checked", "sink: payments.checked\nsource: again")
    line = line_of(text, "again")
    assert error_of(text) == f"/somewhere/payments.yaml:{line}: source: duplicate key (first on line 2)"
    assert error_of("").startswith("/somewhere/payments.yaml:1: the file is empty")


def test_event_placeholders_are_checked_against_the_input_schema(tmp_path: Path) -> None:
    write_schemas(tmp_path / "schemas")
    assert compiled(PIPELINE, tmp_path).schemas_dir == tmp_path / "schemas"
    text = PIPELINE.replace("{payment_id}", "{paymentid}")
    with pytest.raises(ConfigError, match=r"payments.yaml:\d+: steps.fraud.body.payment_id: \{paymentid\}: the input "
                                          r"schema has no field 'paymentid' \(did you mean 'payment_id'\?\)"):
        compiled(text, tmp_path)


async def test_degraded_fields_are_set_when_the_output_schema_has_them(tmp_path: Path) -> None:
    write_schemas(tmp_path / "schemas")
    pipeline = compiled(PIPELINE, tmp_path)
    fake = apis(geo=Fake({"/v1/geo/1.2.3.4": Transient("HTTP 503", status=503, api="geo")}))
    outcome = await pipeline.run_one(EVENT, apis=fake)
    assert outcome.output is not None
    assert outcome.output["degraded"] is True
    assert outcome.output["degraded_reasons"] == ["location: Transient: HTTP 503"]


def write_schemas(root: Path) -> None:
    def record(name: str, *fields: str) -> dict[str, Any]:
        return {"type": "record", "name": name, "namespace": "test",
                "fields": [{"name": field, "type": "string"} for field in fields]}

    payment = ("event_id", "payment_id", "account_id", "amount_cents", "currency", "ip")
    for name, schema in (("Payment", record("Payment", *payment)),
                         ("CheckedPayment", record("CheckedPayment", *payment, "degraded", "degraded_reasons"))):
        (root / name).mkdir(parents=True)
        (root / name / "v1.avsc").write_text(json.dumps(schema))
    (root / "registry.json").write_text(json.dumps({"subjects": {
        "test.Payment": {"directory": "Payment", "versions": {"1": 1}},
        "test.CheckedPayment": {"directory": "CheckedPayment", "versions": {"1": 2}}}}))


# -- the payments example ---------------------------------------------------------------------------------


def test_the_payments_example_compiles() -> None:
    pipeline = load_config(EXAMPLE)
    assert (pipeline.name, pipeline.source, pipeline.sink) == ("payments-checker", "payments", "payments.checked")
    assert (pipeline.input_subject, pipeline.output_subject) == ("dev.example.payments.Payment",
                                                                 "dev.example.payments.CheckedPayment")
    assert pipeline.schemas_dir == EXAMPLE.parent / "schemas" and pipeline.ordered
    assert pipeline.describe() == [
        "1. account (required, api accounts)",
        "1. location (optional, api geo)",
        "2. fraud (required, batch, api fraud) after account",
        "3. checked_at (required) after account, location, fraud",
    ]


async def test_the_payments_example_writes_checked_payments_its_schema_accepts() -> None:
    pipeline = load_config(EXAMPLE)
    event = {"event_id": "e1", "payment_id": "p1", "account_id": "A000001", "amount_cents": 4200,
             "currency": "EUR", "ip": "8.8.8.8", "created_at": 1_700_000_000_000}
    account = {"account_id": "A000001", "holder": "Ada Lovelace", "country": "DE", "opened": "2012-01-01",
               "status": "active"}
    fraud = Fake(post=lambda body: {"results": [{"id": item["id"], "score": 12, "decision": "allow"}
                                                for item in body["items"]]})
    fake = {"accounts": Fake({"/v1/accounts/A000001": account}),
            "geo": Fake({"/v1/geo/8.8.8.8": Transient("HTTP 503", status=503, api="geo")}), "fraud": fraud}
    outcome = await pipeline.run_one(event, apis=fake)
    assert outcome.destination == "output", outcome.failure
    output = outcome.output
    assert output is not None
    assert output["account"] == {"holder": "Ada Lovelace", "country": "DE", "status": "active"}
    assert output["geo"] is None and output["fraud"] == {"score": 12, "decision": "allow"}
    assert output["degraded"] is True and output["degraded_reasons"] == ["location: Transient: HTTP 503"]
    assert output["pipeline"] == "payments-checker" and isinstance(output["checked_at"], int)
    assert fraud.posts[0][1] == {"items": [{"id": "0", "payment_id": "p1", "account_id": "A000001",
                                            "amount_cents": 4200, "currency": "EUR", "country": "DE"}]}
    serde = AvroSerde(EmbeddedRegistry.load(EXAMPLE.parent / "schemas"))
    encoded = serde.encode("dev.example.payments.CheckedPayment", output)
    assert serde.decode(encoded, reader_subject="dev.example.payments.CheckedPayment")["fraud"]["decision"] == "allow"


def test_load_config_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_the_module_docstring_example_compiles(tmp_path: Path) -> None:
    import streams.config

    doc = streams.config.__doc__ or ""
    block = doc.split("every key shown::\n", 1)[1].split("\nKeys:", 1)[0]
    text = (textwrap.dedent(block).replace("mypackage.checks:finish", "tests.unit.test_config_yaml:finish")
            .replace("mypackage.stamps:checked_at", "examples.payments.transforms:checked_at"))
    pipeline = compile_config(text, tmp_path / "pipeline.yaml")
    assert [step.split(" (")[0] for step in pipeline.describe()] == ["1. account", "1. location", "2. score",
                                                                      "3. checked_at"]
