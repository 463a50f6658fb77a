"""A plain (not editable) ``pip install`` of the repository works away from the checkout.

``installed_venv`` builds, once per session, a fresh virtualenv with the repository installed
into it the way a user gets it; the tests run that virtualenv's ``streams`` and ``python`` from
a temporary folder, never from the checkout, with nothing of the checkout on their path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.conftest import SandboxThread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the first test also waits for the install

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 600.0
# Not part of a build, and slow or racy to copy (other runs write there).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".local", ".streams", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)
# Variables of the calling shell that would point the installed package at the checkout or at
# another state folder.
_HOST_ONLY = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "XDG_DATA_HOME", "KAFKA_STATE_DIR",
              "KAFKA_SECURE")


@pytest.fixture(scope="session")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the repository ``pip install``-ed into it (not editable); its path.

    The working tree (uncommitted changes included) is copied first and installed from the copy:
    pip builds a local folder in place (build/, *.egg-info), and the checkout stays untouched.
    pip's usual cache is used, so after the first run the install takes seconds, not minutes.
    Run its commands with ``venv_run``.
    """
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE, symlinks=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, cwd=root)
    env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}  # HOME kept: the same pip cache
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
        cwd=root, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return venv


def venv_env(venv: Path, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for commands of ``venv``: its bin/ first, HOME a test folder, no STREAMS_* of the caller."""
    env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY and not k.startswith("STREAMS_")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), HOME=str(home))
    env.update(extra or {})
    return env


def venv_run(venv: Path, *args: str, cwd: Path, extra_env: Mapping[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``<venv>/bin/<args[0]> args[1:]`` in ``cwd``; see ``run_with_venv``."""
    return run_with_venv(venv, str(venv / "bin" / args[0]), *args[1:], cwd=cwd, extra_env=extra_env, timeout=timeout)


def run_with_venv(venv: Path, *argv: str, cwd: Path, extra_env: Mapping[str, str] | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` with ``venv_env`` (HOME = ``cwd/home``); the exit code is not checked."""
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(list(argv), cwd=cwd, env=venv_env(venv, home, extra_env), capture_output=True, text=True,
                          timeout=timeout)


def _site_packages(venv: Path, cwd: Path) -> Path:
    result = venv_run(venv, "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip()).resolve()


def test_the_cli_runs(installed_venv: Path, tmp_path: Path) -> None:
    result = venv_run(installed_venv, "streams", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kafka" in result.stdout and "worker" in result.stdout


def test_the_packages_come_from_the_virtualenv_not_the_checkout(installed_venv: Path, tmp_path: Path) -> None:
    code = ("import json, streams, connectors, sandbox; "
            "print(json.dumps({m.__name__: m.__file__ for m in (streams, connectors, sandbox)}))")
    result = venv_run(installed_venv, "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    site_packages = _site_packages(installed_venv, tmp_path)
    for name, file in json.loads(result.stdout).items():
        path = Path(file).resolve()
        assert path == site_packages / name / "__init__.py", f"{name} imported from {path}"
        assert not path.is_relative_to(REPO), f"{name} imported from the checkout: {path}"


def test_the_packaged_broker_script_is_run_and_keeps_its_state_outside_the_package(
    installed_venv: Path, tmp_path: Path
) -> None:
    broker = _site_packages(installed_venv, tmp_path) / "streams" / "kafka" / "broker"
    shipped = {"__init__.py", "kafka.sh", "pom.xml"}

    result = venv_run(installed_venv, "streams", "kafka", "path", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    script = Path(result.stdout.strip())
    assert script == broker / "kafka.sh" and script.is_file()
    assert (broker / "pom.xml").is_file()

    # With HOME a fresh folder, the installed script has no broker of its own: "stopped", exit 3.
    # (A missing script would be bash's exit 127 with nothing on stdout.)
    result = venv_run(installed_venv, "streams", "kafka", "status", cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (3, "stopped"), result.stderr

    # State: ~/.local/share/streams (or $XDG_DATA_HOME/streams), else $STREAMS_HOME; never site-packages.
    home = tmp_path / "home"
    cases = [
        ({}, home / ".local" / "share" / "streams" / "kafka"),
        ({"KAFKA_SECURE": "1"}, home / ".local" / "share" / "streams" / "kafka-secure"),
        ({"XDG_DATA_HOME": str(tmp_path / "xdg")}, tmp_path / "xdg" / "streams" / "kafka"),
        ({"STREAMS_HOME": str(tmp_path / "state")}, tmp_path / "state" / "kafka"),
        ({"STREAMS_HOME": "relative"}, tmp_path / "relative" / "kafka"),
    ]
    for extra, expected in cases:
        result = run_with_venv(installed_venv, "bash", str(script), "state-dir", cwd=tmp_path, extra_env=extra)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()) == expected, extra

    assert {p.name for p in broker.iterdir()} - {"__pycache__"} == shipped


def test_an_installed_package_has_no_checkout_defaults(installed_venv: Path, tmp_path: Path) -> None:
    code = """if True:
        import json
        from streams.serde.registry import DEFAULT_SCHEMAS_DIR, EmbeddedRegistry, UnknownSchemaError
        from streams.settings import Settings
        try:
            error, subjects = None, EmbeddedRegistry.load().subjects()
        except UnknownSchemaError as exc:
            error, subjects = str(exc), None
        print(json.dumps({"default": DEFAULT_SCHEMAS_DIR and str(DEFAULT_SCHEMAS_DIR), "error": error,
                          "subjects": subjects, "data_dir": str(Settings().data_dir)}))
    """
    result = venv_run(installed_venv, "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["default"] is None
    assert found["error"] and "no schema folder given: set STREAMS_SCHEMAS_DIR" in found["error"]
    assert Path(found["data_dir"]) == Path(".streams") / "worker"  # relative to where the worker starts

    result = venv_run(installed_venv, "python", "-c", code, cwd=tmp_path,
                      extra_env={"STREAMS_SCHEMAS_DIR": str(REPO / "schemas")})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["default"] == str(REPO / "schemas") and found["error"] is None and found["subjects"]


def test_a_user_module_with_its_own_schemas_is_checked_and_run_by_the_installed_package(
    installed_venv: Path, tmp_path: Path, kafka_bootstrap: str, sandbox: SandboxThread, unique: str
) -> None:
    """What a user does: a module and its schemas in a folder of theirs, nothing of the checkout."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "examples" / "payments" / "pipeline.py", project / "checks.py")
    shutil.copytree(REPO / "examples" / "payments" / "schemas", project / "schemas")
    name = f"installed-{unique}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAMS_APP": "checks:pipeline",
           "STREAMS_PIPELINE": name, "STREAMS_INPUT_TOPIC": f"{name}.in", "STREAMS_OUTPUT_TOPIC": f"{name}.out",
           "STREAMS_API_ACCOUNTS_URL": sandbox.url, "STREAMS_API_GEO_URL": sandbox.url,
           "STREAMS_API_FRAUD_URL": sandbox.url, "STREAMS_TELEMETRY_PORT": "0"}
    payment = {"event_id": f"evt-{unique}", "payment_id": f"pay-{unique}", "account_id": "A000001",
               "amount_cents": 1250, "currency": "EUR", "ip": "81.2.69.160", "created_at": 1_764_000_000_000}
    (project / "payment.json").write_text(json.dumps(payment))

    checked = venv_run(installed_venv, "streams", "check", "--sample", "payment.json", cwd=project, extra_env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "step 2. verdict (required, batch, api fraud) after account" in checked.stdout
    assert f"input schema dev.example.payments.Payment v1 (id 101) from {project / 'schemas'}" in checked.stdout
    assert '"decision": ' in checked.stdout and checked.stdout.rstrip().endswith("OK")

    topics = venv_run(installed_venv, "streams", "topics", "--partitions", "2", cwd=project, extra_env=env)
    assert topics.returncode == 0, topics.stderr
    (project / "payments.jsonl").write_text("\n".join(json.dumps({**payment, "event_id": f"evt-{unique}-{n}",
                                                                  "payment_id": f"pay-{n}"}) for n in range(20)))
    produced = venv_run(installed_venv, "streams", "produce", "--file", "payments.jsonl", "--key", "account_id",
                        cwd=project, extra_env=env)
    assert produced.returncode == 0, produced.stderr
    log = (project / "worker.log").open("w")
    worker = subprocess.Popen([str(installed_venv / "bin" / "streams"), "worker"], cwd=project, stdout=log,
                              stderr=subprocess.STDOUT, env=venv_env(installed_venv, project / "home", env))
    try:
        consumed = venv_run(installed_venv, "streams", "consume", "--max", "20", "--idle", "60", cwd=project,
                            extra_env=env, timeout=180)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()
    assert consumed.returncode == 0, consumed.stderr
    values = [json.loads(line)["value"] for line in consumed.stdout.splitlines()]
    assert sorted(v["event_id"] for v in values) == sorted(f"evt-{unique}-{n}" for n in range(20)), \
        (project / "worker.log").read_text()[-3000:]
    assert all(v["account"]["holder"] and v["pipeline"] == name for v in values)
