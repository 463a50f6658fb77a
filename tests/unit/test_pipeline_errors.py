"""Each way to get a pipeline wrong gets an error that names the thing (through the ``streams`` CLI)."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main

REPO = Path(__file__).resolve().parents[2]
PAYMENT_SCHEMAS = REPO / "examples" / "payments" / "schemas"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def in_a_user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("STREAMS_APP", "STREAMS_CONFIG", "STREAMS_PIPELINE", "STREAMS_SCHEMAS_DIR"):
        monkeypatch.delenv(name, raising=False)


def module(tmp_path: Path, body: str) -> str:
    """Write a user module (a fresh name, so imports never collide) and return its name."""
    name = f"user_{uuid.uuid4().hex[:8]}"
    header = f"""
        from streams import Api, Pipeline
        pipeline = Pipeline("p", source="in", sink="out", input_schema="dev.example.payments.Payment",
                            output_schema="dev.example.payments.CheckedPayment", schemas={str(PAYMENT_SCHEMAS)!r})
    """
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(header) + textwrap.dedent(body))
    return name


def test_an_unknown_module_is_named() -> None:
    code, output = run("check", "--app", "no_such_module:pipeline")
    assert code != 0 and "no module named 'no_such_module'" in output


def test_an_unknown_attribute_is_named_with_the_pipelines_there() -> None:
    code, output = run("check", "--app", "pipelines.orders:pipelin")
    assert code != 0 and "has no attribute 'pipelin' (pipelines in it: pipeline)" in output


def test_no_pipeline_named_says_how_to_name_one() -> None:
    code, output = run("check")
    assert code != 0 and "--app module:attribute (or STREAMS_APP)" in output


def test_a_step_that_depends_on_an_unknown_step_is_named(tmp_path: Path) -> None:
    name = module(tmp_path, """
        @pipeline.step()
        def score(event, acount):
            return 1
        pipeline.output(lambda event, score: event)
    """)
    code, output = run("check", "--app", f"{name}:pipeline")
    assert code != 0 and "score step depends on unknown step 'acount'" in output


def test_a_cycle_is_named(tmp_path: Path) -> None:
    name = module(tmp_path, """
        @pipeline.step()
        def first(event, second):
            return 1
        @pipeline.step()
        def second(event, first):
            return 2
        pipeline.output(lambda event, first: event)
    """)
    code, output = run("check", "--app", f"{name}:pipeline")
    assert code != 0 and "first -> second -> first" in output


def test_a_missing_schema_is_named_with_where_it_was_looked_for(tmp_path: Path) -> None:
    name = module(tmp_path, """
        pipeline.output_subject = "dev.example.payments.Refund"
        pipeline.output(lambda event: event)
    """)
    code, output = run("check", "--app", f"{name}:pipeline")
    assert code != 0
    assert f"output schema 'dev.example.payments.Refund' is not in {PAYMENT_SCHEMAS}" in output


def test_a_missing_api_url_names_its_variable(tmp_path: Path) -> None:
    name = module(tmp_path, """
        geo = Api("geo-ip")
        @pipeline.step(geo)
        async def location(event):
            return await geo.get("/v1/geo/{ip}", ip=event["ip"])
        pipeline.output(lambda event, location: event)
    """)
    code, output = run("check", "--app", f"{name}:pipeline")
    assert code != 0 and "API 'geo-ip' has no URL: set STREAMS_API_GEO_IP_URL" in output


def test_an_unknown_yaml_key_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        pipeline: p
        source: in
        sink: out
        input_schema: dev.example.payments.Payment
        output_schema: dev.example.payments.CheckedPayment
        schemas: {PAYMENT_SCHEMAS}
        apis:
          accounts: {{base_url: "http://127.0.0.1:1"}}
        steps:
          account:
            api: accounts
            gett: /v1/accounts/{{account_id}}
    """))
    code, output = run("check", "--config", "pipeline.yaml")
    assert code != 0 and "pipeline.yaml:12: steps.account.gett: unknown key (did you mean 'get'?)" in output
