"""docker-compose.yml is checked without a Docker engine: against the Compose Specification, and
against the project (settings, CLI commands, mounted files).

tests/data/compose-spec.json is the Compose Specification's JSON schema as check-jsonschema
0.39.0 (PyPI) vendors it (check_jsonschema/builtin_schemas/vendor/compose-spec.json, sha256
d549057e...0e64; from github.com/compose-spec/compose-spec, Apache License 2.0). Update it the
same way: `pip download --no-deps check-jsonschema` and copy that file.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from streams.api import ApiSettings
from streams.cli import main
from streams.loader import load_pipeline
from streams.secret_files import secret_field_names
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _streams_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this repository's image (built from its Dockerfile)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def _dockerfile(instruction: str) -> list[str]:
    return [line.split(None, 1)[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
            if line.startswith(f"{instruction} ")]


# -- the specification -------------------------------------------------------------------------

def test_docker_compose_yml_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    Draft202012Validator.check_schema(schema)
    errors = sorted(Draft202012Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_the_schema_rejects_what_compose_rejects() -> None:
    """The vendored schema is the real one, not an empty object that accepts anything."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    assert not list(validator.iter_errors({"services": {"w": {"image": "x", "profiles": ["cli"]}}}))
    assert list(validator.iter_errors({"services": {"w": {"image": "x", "comand": ["worker"]}}}))
    assert list(validator.iter_errors({"services": {"w": {"image": "x", "depends_on": {"k": {"condition": "ready"}}}}}))
    assert list(validator.iter_errors({"servises": {}}))


# -- the project's settings ------------------------------------------------------------------

def _settings_variables() -> set[str]:
    """Every variable streams.settings.Settings reads (secrets also as <VARIABLE>_FILE)."""
    names: dict[str, list[str]] = {}
    for field_name, field in Settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        names[field_name] = [str(c) for c in choices] if choices else [f"STREAMS_{field_name.upper()}"]
    secrets = set(secret_field_names(Settings))
    return {variable + suffix for field_name, variables in names.items() for variable in variables
            for suffix in (("", "_FILE") if field_name in secrets else ("",))}


def _api_setting_suffixes() -> set[str]:
    """The <SETTING>s of STREAMS_API_<NAME>_<SETTING> that ApiSettings.from_environment reads.

    Read from its source: every text("X"), number("X", ...) and secret("X") call (a secret is
    also read from X_FILE). A branch not taken at run time still counts, as it would for a user.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(ApiSettings.from_environment)))
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("text", "number", "secret") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
            if node.func.id == "secret":
                found.add(f"{node.args[0].value}_FILE")
    assert {"URL", "TIMEOUT", "RETRIES", "RATE_LIMIT", "CLIENT_SECRET_FILE"} <= found, found  # the reader works
    return found


def _module_variables(module_name: str) -> set[str]:
    """Environment variables a module reads with os.environ.get / os.getenv / os.environ[...]."""
    source = Path(importlib.util.find_spec(module_name).origin).read_text()  # type: ignore[arg-type, union-attr]
    return set(re.findall(r"""os\.(?:environ\.get|getenv)\(\s*["']([A-Z0-9_]+)["']""", source)
               + re.findall(r"""os\.environ\[\s*["']([A-Z0-9_]+)["']\s*\]""", source))


def _known_variables(app: str) -> set[str]:
    """Every STREAMS_*/KAFKA_* variable a worker of pipeline ``app`` reads, and its module's own."""
    pipeline = load_pipeline(app, None)
    known = _settings_variables()
    known |= {ApiSettings.variable(api.name, suffix) for api in pipeline.apis for suffix in _api_setting_suffixes()}
    known |= {f"STREAMS_TABLE_{re.sub(r'[^A-Z0-9]', '_', name.upper())}_TOPIC" for name in pipeline.tables}
    known |= _module_variables(app.split(":")[0])
    return known


def test_the_known_variables_are_what_the_code_reads() -> None:
    known = _known_variables("pipelines.orders:pipeline")
    assert {"KAFKA_BOOTSTRAP_SERVERS", "STREAMS_TELEMETRY_HOST", "STREAMS_KAFKA_SASL_PASSWORD_FILE",
            "STREAMS_API_CUSTOMERS_URL", "STREAMS_API_FX_TIMEOUT", "STREAMS_TABLE_PRODUCTS_TOPIC",
            "ORDERS_ENRICH_WITH"} <= known
    assert not {"STREAMS_TELEMETRY_HOSTNAME", "STREAMS_API_CUSTOMERS_URI", "STREAMS_API_NOPE_URL",
                "STREAMS_TABLE_NOPE_TOPIC", "KAFKA_NODE_ID"} & known


def test_every_streams_and_kafka_variable_set_for_the_streams_image_is_a_real_setting(
    compose: dict[str, Any],
) -> None:
    image_env = dict(item.split("=", 1) for line in _dockerfile("ENV") for item in line.split())
    checked = 0
    for name, service in _streams_services(compose).items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):  # the KEY=value form
            environment = dict(item.split("=", 1) for item in environment)
        environment = {**image_env, **environment}
        app = environment.get("STREAMS_APP", "pipelines.orders:pipeline")
        known = _known_variables(app)
        unknown = sorted(v for v in environment if v.startswith(("STREAMS_", "KAFKA_")) and v not in known)
        assert not unknown, f"service {name} sets variables no setting reads: {unknown}"
        if name == "worker":  # the stack's worker is configured for the stack
            assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
            assert environment["STREAMS_TELEMETRY_HOST"] == "0.0.0.0"  # Prometheus scrapes it from outside
        checked += len(environment)
    assert checked


# -- commands and files ----------------------------------------------------------------------

def _check_cli_arguments(arguments: list[str]) -> None:
    """The arguments name a `streams` command (through its groups) and parse as its options."""
    command: click.Command = main
    path = ["streams"]
    rest = list(arguments)
    while isinstance(command, click.Group):
        assert rest, f"`{' '.join(path)}` needs a subcommand"
        name = rest.pop(0)
        assert name in command.commands, f"`{' '.join(path)}` has no command {name!r}: {sorted(command.commands)}"
        command = command.commands[name]
        path.append(name)
    try:
        command.make_context(" ".join(path), list(rest), resilient_parsing=False)  # parses; runs nothing
    except click.UsageError as exc:
        raise AssertionError(f"`{' '.join(path + rest)}`: {exc.format_message()}") from None


def test_every_command_of_the_streams_image_is_a_real_streams_command(compose: dict[str, Any]) -> None:
    entrypoint = json.loads(_dockerfile("ENTRYPOINT")[0])
    assert entrypoint == ["streams"]
    _check_cli_arguments(json.loads(_dockerfile("CMD")[0]))  # what a service without command: runs
    commands = 0
    for name, service in _streams_services(compose).items():
        command = service.get("command")
        if isinstance(command, str):
            command = command.split()
        if "entrypoint" in service:  # not the streams CLI: a module of this repository
            entry = service["entrypoint"]
            assert entry[:2] == ["python", "-m"], f"service {name}: unexpected entrypoint {entry}"
            assert importlib.util.find_spec(entry[2]) is not None, f"service {name}: no module {entry[2]}"
            continue
        if command is not None:
            _check_cli_arguments(command)
            commands += 1
    assert commands >= 3  # sandbox, topics, worker


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    mounts = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"service {name} mounts {source}, which is not in the repository"
                mounts += 1
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (ROOT / context / dockerfile).is_file(), f"service {name} builds from a missing {dockerfile}"
    assert mounts >= 5


def _mounted(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts."""
    return {volume.split(":")[1]: ROOT / volume.split(":")[0] for volume in service.get("volumes", [])}


def test_prometheus_loads_the_alert_rules_and_grafana_its_provisioning(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = _mounted(services["prometheus"])
    config = yaml.safe_load(prometheus["/etc/prometheus/prometheus.yml"].read_text())
    assert config["rule_files"] and all(path in prometheus for path in config["rule_files"])
    assert prometheus["/etc/prometheus/alerts.yml"] == ROOT / "deploy/prometheus/alerts.yml"
    assert [job["job_name"] for job in config["scrape_configs"]] == ["streams-workers"]  # `up` in the rules

    grafana = _mounted(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["url"]) for d in datasources] == [("prometheus", "http://prometheus:9090")]
    providers = yaml.safe_load((provisioning / "dashboards/streams.yml").read_text())["providers"]
    for provider in providers:
        dashboards = grafana[provider["options"]["path"]]
        assert [p.name for p in dashboards.glob("*.json")] == ["streams.json"]
        assert json.loads((dashboards / "streams.json").read_text())["uid"] == "streams-workers"

    registry = services["registry"]
    assert registry["image"] == "apicurio/apicurio-registry:3.0.9" and registry["profiles"] == ["registry"]
