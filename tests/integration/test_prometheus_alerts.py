"""The alert rules and the Grafana dashboard, on a real Prometheus scraping a real worker.

deploy/prometheus/alerts.yml is checked with promtool, then loaded as it is by a `prometheus`
binary (Debian's package; `make test` installs it) that scrapes a worker every second and
evaluates the rules every second. An outage of the customers API, caused through the sandbox's
admin endpoint, opens the worker's circuit: the circuit alert goes firing, and resolves when the
API answers again. Every metric the rules and the dashboard's queries use then has data in that
Prometheus, from a worker that has enriched, retried and dead-lettered events.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pipelines.orders_samples import sample_orders
from streams.worker_process import ChildProcess, WorkerProcess
from tests.conftest import SandboxThread
from tests.integration.harness import pipeline_under_test, set_faults, telemetry_url, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streams.json"
JOB = "streams-workers"  # the scrape job of deploy/prometheus.yml, which the rules' `up` names
CIRCUIT_ALERT = "StreamsApiCircuitOpen"
METRIC_NAME = re.compile(r"\b(streams_[a-z0-9_]+|up)\b")


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is needed by this test (Debian package prometheus; `make test` installs it)"
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_prometheus(tmp_path: Path, metrics_url: str) -> Iterator[str]:
    """A Prometheus scraping ``metrics_url`` every second with the repository's rules; yields its URL."""
    target = re.sub(r"^https?://", "", metrics_url).split("/")[0]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = _free_port()
    server = ChildProcess([_tool("prometheus"), f"--config.file={config_file}",
                           f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                          tmp_path / "prometheus.log")
    with server:
        yield f"http://127.0.0.1:{port}"
        assert server.alive, server.log_tail()


class PrometheusApi:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}{path}", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def ready(self) -> bool:
        try:
            async with self.session.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def query(self, expr: str) -> list[dict[str, Any]]:
        return (await self.get("/api/v1/query", query=expr))["result"]  # type: ignore[no-any-return]

    async def value(self, expr: str) -> float:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    async def alert_states(self, name: str, **labels: str) -> list[str]:
        """The states (pending, firing) of the active alerts ``name`` with these labels."""
        alerts = (await self.get("/api/v1/alerts"))["alerts"]
        return [a["state"] for a in alerts if a["labels"]["alertname"] == name
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    async def names_with_data(self, names: set[str]) -> set[str]:
        pattern = "|".join(sorted(names))
        result = await self.query(f'count by (__name__) ({{__name__=~"{pattern}"}})')
        return {series["metric"]["__name__"] for series in result}


def _alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, query) of every dashboard query, its variables set to all values."""
    exprs = [(panel["title"], target["expr"]) for panel in _dashboard_panels() for target in panel.get("targets", [])]
    return [(title, expr.replace("$__rate_interval", "1m").replace("$pipeline", ".*").replace("$connector", ".*"))
            for title, expr in exprs]


def _metric_names() -> set[str]:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    texts = [*_alert_exprs(), *(expr for _, expr in _dashboard_exprs()),
             *(v["definition"] for v in variables if v["type"] == "query")]
    return {name for text in texts for name in METRIC_NAME.findall(text)}


def test_the_rules_pass_promtool() -> None:
    checked = subprocess.run([_tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_alert_exprs())} rules found" in checked.stdout


def _telemetry(worker: WorkerProcess) -> str | None:
    assert worker.alive, worker.log_tail()
    try:
        return telemetry_url(worker)
    except (AssertionError, FileNotFoundError):
        return None


async def test_an_api_outage_fires_the_circuit_alert_on_a_real_prometheus_and_every_metric_has_data(
    kafka_bootstrap: str, fault_sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    names = _metric_names()
    assert {"up", "streams_connector_breaker_state", "streams_events_dead_lettered_total"} <= names
    pipeline = pipeline_under_test(kafka_bootstrap, fault_sandbox.url, unique, tmp_path)
    await pipeline.create_topics(partitions=2)
    # Some calls fail: 503s are retried through the tiers (the last one dead-letters), 404s go to
    # the DLQ at once; two undecodable records go there as poison.
    await set_faults(fault_sandbox.url, "customers", {"errors": {"503": 0.1, "404": 0.05}})
    env = {"STREAMS_HTTP_MAX_ATTEMPTS": "1", "STREAMS_RETRY_DELAYS": "1s,2s",
           "STREAMS_API_RISK_RATE_LIMIT": "2000"}  # a rate-limited API: limiter waits are measured
    with pipeline.worker(0, **env) as worker:
        metrics_url = await wait_for(lambda: _telemetry(worker), 60, "the worker's telemetry server")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            with running_prometheus(tmp_path, f"{metrics_url}/metrics") as url:
                prometheus = PrometheusApi(session, url)
                await wait_for(prometheus.ready, 30, "Prometheus to be ready")
                await pipeline.produce(sample_orders(200, customers=500, seed=11, run=f"{unique}-a"),
                                       raw=[b"\x00\x01 not avro", b"\xff" * 40])

                async def processed() -> bool:
                    return (await prometheus.value("sum(streams_events_out_total)") > 0
                            and await prometheus.value("sum(streams_events_retried_total)") > 0
                            and await prometheus.value("sum(streams_events_dead_lettered_total)") >= 3)

                await wait_for(processed, 60, "enriched, retried and dead-lettered events in Prometheus")
                assert await prometheus.value(f'up{{job="{JOB}"}}') == 1
                assert not await prometheus.alert_states(CIRCUIT_ALERT)

                # The outage: every customers call answers 503 until it is cleared.
                await set_faults(fault_sandbox.url, "customers",
                                 {"outages": [{"start_s": 0, "duration_s": None, "status": 503}]})
                outage_began = time.monotonic()
                await pipeline.produce(sample_orders(150, customers=500, seed=12, run=f"{unique}-b"))

                async def firing() -> bool:
                    states = await prometheus.alert_states(CIRCUIT_ALERT, pipeline=pipeline.name, connector="customers")
                    return states == ["firing"]

                await wait_for(firing, 60, f"{CIRCUIT_ALERT} to fire", interval=0.5)
                fired_after = time.monotonic() - outage_began
                alert = next(a for a in (await prometheus.get("/api/v1/alerts"))["alerts"]
                             if a["labels"]["alertname"] == CIRCUIT_ALERT)
                assert alert["labels"]["severity"] == "critical"
                assert "circuit of API customers is open" in alert["annotations"]["summary"]
                assert pipeline.name in alert["annotations"]["summary"]
                assert "{{" not in alert["annotations"]["description"]
                assert "circuit of connector customers is open" in worker.log_path.read_text()

                await set_faults(fault_sandbox.url, "customers", None)  # the API is back
                outage_ended = time.monotonic()

                async def resolved() -> bool:
                    return not await prometheus.alert_states(CIRCUIT_ALERT, connector="customers")

                await wait_for(resolved, 45, f"{CIRCUIT_ALERT} to resolve", interval=0.5)
                resolved_after = time.monotonic() - outage_ended
                assert await prometheus.value('max(streams_connector_breaker_state{connector="customers"})') == 0

                # Every metric the rules and the dashboard use has data, and every rule evaluates.
                async def all_have_data() -> bool:
                    missing[:] = sorted(names - await prometheus.names_with_data(names))
                    return not missing

                missing: list[str] = []
                try:
                    await wait_for(all_have_data, 20, "every metric to have data")
                except AssertionError:
                    raise AssertionError(f"no data in Prometheus for {missing}") from None
                rules = [rule for group in (await prometheus.get("/api/v1/rules"))["groups"]
                         for rule in group["rules"]]
                assert len(rules) == len(_alert_exprs())
                assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
                empty = [title for title, expr in _dashboard_exprs() if not await prometheus.query(expr)]
                assert not empty, f"dashboard panels with no data: {empty}"
        assert worker.alive, worker.log_tail()
    print(f"\n{CIRCUIT_ALERT} fired {fired_after:.1f} s after the outage began and resolved "
          f"{resolved_after:.1f} s after it ended; {len(names)} metric names and "
          f"{len(_dashboard_exprs())} dashboard queries with data; {time.monotonic() - began:.0f} s in all")
