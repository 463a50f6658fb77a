"""The contenders, one place: what each is, and how to start it on a run's topics.

Each runs in a child process of its own, so its CPU and memory can be measured alone and it
never shares a GIL with the API server or the bench's producer and consumer.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.processes import Contender
from streams.names import dlq_topic
from streams.worker_process import ChildProcess, WorkerProcess


@dataclass(frozen=True)
class RunTopics:
    """Where one run happens: its broker, topics, group and API; all names start with ``name``."""

    name: str
    bootstrap: str
    input_topic: str
    output_topic: str
    api_url: str
    workdir: Path


@dataclass(frozen=True)
class ContenderSpec:
    key: str
    title: str
    calls_api: bool
    start: Callable[[RunTopics], Contender]
    dead_letter_topic: Callable[[RunTopics], str | None] = lambda run: None


def _baseline(module: str) -> Callable[[RunTopics], Contender]:
    def start(run: RunTopics) -> Contender:
        command = [sys.executable, "-m", f"bench.baselines.{module}", "--bootstrap", run.bootstrap,
                   "--input", run.input_topic, "--output", run.output_topic, "--group", run.name,
                   "--api-url", run.api_url]
        return ChildProcess(command, run.workdir / f"{run.name}.log").start()

    return start


def _ours(run: RunTopics, source: Path | None = None, runtime: str | None = None,
          guarantee: str | None = None) -> Contender:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": run.bootstrap,
        "STREAMS_APP": "pipelines.orders:pipeline",
        "STREAMS_PIPELINE": run.name,
        "STREAMS_INPUT_TOPIC": run.input_topic,
        "STREAMS_OUTPUT_TOPIC": run.output_topic,
        "STREAMS_API_CUSTOMERS_URL": run.api_url,
        "STREAMS_DATA_DIR": str(run.workdir / run.name),
        # Like for like with B1, which makes one API call per event: the customer lookup only
        # (the orders pipeline's defaults also call risk and FX and read the products table).
        "ORDERS_ENRICH_WITH": "customers",
        # The same, as trees from before the public pipeline API name them (ours_at).
        "STREAMS_CUSTOMERS_API_URL": run.api_url,
        "STREAMS_ENRICH_WITH": "customers",
        **({"STREAMS_RUNTIME": runtime} if runtime else {}),
        **({"STREAMS_GUARANTEE": guarantee} if guarantee else {}),
    }
    return WorkerProcess(env, run.workdir / f"{run.name}.log", cwd=source).start()


def ours_at(revision: str) -> ContenderSpec:
    """Ours as committed at ``revision`` (a git worktree under .local/bench-trees), run beside
    today's in the same run: a before/after comparison on the same broker, API and data."""
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.strip()
    tree = repo / ".local" / "bench-trees" / commit
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=repo, check=True,
                       capture_output=True)
    return ContenderSpec(f"ours-at-{commit}", f"streams worker as of {commit} (same settings as ours)", calls_api=True,
                         start=lambda run: _ours(run, source=tree),
                         dead_letter_topic=lambda run: dlq_topic(run.name))


_JAVA_PROJECT = Path(__file__).resolve().parent / "java"
_PC_JAR = _JAVA_PROJECT / "target" / "pc-enricher.jar"


def _pc_jar(log_dir: Path) -> Path:
    """bench/java's shaded jar, built with Maven when missing or older than its pom or a source."""
    inputs = [_JAVA_PROJECT / "pom.xml", *(p for p in (_JAVA_PROJECT / "src").rglob("*") if p.is_file())]
    if _PC_JAR.exists() and _PC_JAR.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
        return _PC_JAR
    log = log_dir / "pc-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(_JAVA_PROJECT / "pom.xml"), "package", "-DskipTests"]
    try:
        with log.open("wb") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise RuntimeError("PC needs Maven (mvn) and Java 17 to build bench/java") from None
    if done.returncode != 0 or not _PC_JAR.exists():
        raise RuntimeError(f"building bench/java failed ({shlex.join(command)}), see {log}")
    return _PC_JAR


def _parallel_consumer(run: RunTopics) -> Contender:
    """bench/java: Confluent Parallel Consumer (KEY order, Vert.x HTTP), run as `java -jar` so the JVM itself is
    the measured process (no Maven wrapper). BENCH_PC_JAVA_OPTS adds JVM options (default: none, JVM ergonomics)."""
    jar = _pc_jar(run.workdir)
    java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else "java"
    command = [java, *shlex.split(os.environ.get("BENCH_PC_JAVA_OPTS", "")), "-jar", str(jar),
               "--bootstrap", run.bootstrap, "--input", run.input_topic, "--output", run.output_topic,
               "--group", run.name, "--api-url", run.api_url,
               "--schemas-dir", str(_JAVA_PROJECT.parents[1] / "schemas")]
    return ChildProcess(command, run.workdir / f"{run.name}.log").start()


CONTENDERS: dict[str, ContenderSpec] = {
    spec.key: spec
    for spec in (
        ContenderSpec("B0", "raw aiokafka, decode+encode, no HTTP", calls_api=False, start=_baseline("raw")),
        ContenderSpec("B1", "aiokafka + aiohttp, gather per batch, unordered", calls_api=True,
                      start=_baseline("expert")),
        ContenderSpec("B2", "naive Faust agent, await per event", calls_api=True, start=_baseline("naive_faust")),
        ContenderSpec("ours", "streams worker (orders-enricher), customers only, other settings default "
                      "(the aiokafka runtime)", calls_api=True, start=_ours,
                      dead_letter_topic=lambda run: dlq_topic(run.name)),
        ContenderSpec("ours-faust", "the same on the Faust runtime (STREAMS_RUNTIME=faust)", calls_api=True,
                      start=lambda run: _ours(run, runtime="faust"),
                      dead_letter_topic=lambda run: dlq_topic(run.name)),
        ContenderSpec("ours-eos", "the same with STREAMS_GUARANTEE=exactly-once (outputs and offsets in one "
                      "transaction per commit interval)", calls_api=True,
                      start=lambda run: _ours(run, guarantee="exactly-once"),
                      dead_letter_topic=lambda run: dlq_topic(run.name)),
        ContenderSpec("PC", "Confluent Parallel Consumer 0.5.3.2, KEY order, Vert.x HTTP", calls_api=True,
                      start=_parallel_consumer),
    )
}
