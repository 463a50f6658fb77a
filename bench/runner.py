"""One benchmark run, closed or open loop, and the suite that runs them all in one go.

Closed loop (max throughput): the input is preloaded with every event, then the contender
starts; events/s is the output count over the span of the output's broker append times
(first to last), so process start-up and group join are not counted. CPU per 1,000 events
is the contender's user+sys over the same window (from the first output seen to the end).

Open loop (latency): the contender is started and warmed up (its first events are out), then
a producer sends at a fixed rate whatever happens, stamping each record's intended send time;
latency is the output record's broker append time minus that intended time. Events still
missing at the end count with their wait so far, and percentiles that land on them are
reported as lower bounds.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.api_server import ApiServer
from bench.contenders import CONTENDERS, ContenderSpec, RunTopics
from bench.data import Dataset, make_dataset, zipf_share_of_hottest
from bench.kafka_io import (
    OpenLoopSchedule,
    OutputWatcher,
    create_run_topics,
    delete_topics_with_prefix,
    preload,
    produce_open_loop,
)
from bench.processes import Contender, ProcessMeter, system_busy_seconds
from streams.progress import progress
from streams.runtime import choose_event_loop


@dataclass(frozen=True)
class Plan:
    """What to run; built from the command line."""

    events: int
    latencies_ms: list[float]
    cases: list[str]
    contenders: list[str]
    out: Path
    bootstrap: str
    partitions: int = 8
    rate: float | None = 500.0  # open-loop events/s; 0 skips the latency runs; None: auto (see open_loop_rate)
    open_seconds: float = 15.0
    warmup_events: int = 200
    max_seconds: float = 150.0  # cap on a closed run's processing time
    b2_max_seconds: float = 30.0
    drain_seconds: float = 30.0
    startup_seconds: float = 120.0
    api_workers: int = 1
    keep_topics: bool = False


@dataclass
class RunResult:
    """What one run measured. Rates in events/s, latencies in ms, CPU in seconds."""

    contender: str
    case: str
    api_latency_ms: float | None  # None: the contender makes no API calls
    mode: str  # closed | open
    target_events: int
    events: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    events_per_s: float | None = None
    capped: bool = False
    elapsed_s: float = 0.0
    startup_s: float | None = None
    rate: float | None = None  # open loop: the offered rate
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    p50_lower_bound: bool = False
    p99_lower_bound: bool = False
    undelivered: int = 0
    p99_by_second_ms: list[float] = field(default_factory=list)  # open loop: p99 of each second of sending
    producer_behind_ms: float = 0.0
    cpu_s_per_1k: float | None = None
    cpu_cores: float | None = None  # contender CPU seconds per wall second in the window
    peak_rss_mb: float | None = None
    api_cores: float | None = None
    bench_cores: float | None = None
    machine_busy_cores: float | None = None  # whole machine, every process
    other_cores: float | None = None  # busy minus contender, API server and bench: broker + neighbours
    load_avg: tuple[float, float, float] | None = None
    broker_stamped: bool = True
    skipped: str | None = None
    error: str | None = None
    log: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Snapshot:
    wall: float
    contender: float
    api: float
    bench: float
    busy: float

    @classmethod
    def take(cls, meter: ProcessMeter, api: ApiServer | None) -> _Snapshot:
        own = psutil.Process().cpu_times()
        return cls(time.time(), meter.cpu_seconds(), api.cpu_seconds() if api else 0.0,
                   own.user + own.system, system_busy_seconds())


def _window(result: RunResult, start: _Snapshot, end: _Snapshot, events: int) -> None:
    wall = max(end.wall - start.wall, 1e-9)
    used = end.contender - start.contender
    result.cpu_cores = used / wall
    result.cpu_s_per_1k = used / events * 1000 if events > 0 else None
    result.api_cores = (end.api - start.api) / wall
    result.bench_cores = (end.bench - start.bench) / wall
    result.machine_busy_cores = (end.busy - start.busy) / wall
    result.other_cores = max(0.0, result.machine_busy_cores - result.cpu_cores - result.api_cores - result.bench_cores)


def percentile(sorted_values: list[float], q: float) -> tuple[float, int]:
    """Nearest-rank percentile of an ascending list, and the index it was taken from."""
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index], index


class RunFailed(RuntimeError):
    pass


async def _wait_first_output(contender: Contender, watcher: OutputWatcher, deadline: float, want: int = 1) -> float:
    start = time.monotonic()
    while watcher.count < want:
        _check(contender, watcher)
        if time.monotonic() - start > deadline:
            raise RunFailed(f"only {watcher.count}/{want} outputs after {deadline:.0f} s of start-up")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def _check(contender: Contender, watcher: OutputWatcher) -> None:
    if not contender.alive:
        raise RunFailed("contender exited")
    failure = watcher.has_failed()
    if failure is not None:
        raise RunFailed(f"output watcher failed: {failure!r}")


async def run_closed(spec: ContenderSpec, run: RunTopics, data: Dataset, plan: Plan, api: ApiServer | None,
                     api_latency_ms: float | None) -> RunResult:
    result = RunResult(spec.key, data.case, api_latency_ms, "closed", len(data))
    cap = plan.b2_max_seconds if spec.key == "B2" else plan.max_seconds
    dlq = spec.dead_letter_topic(run)
    await create_run_topics(run.bootstrap, run.input_topic, run.output_topic, plan.partitions,
                            {dlq: 1} if dlq else None)
    await preload(run.bootstrap, run.input_topic, data)
    result.load_avg = os.getloadavg()
    topics = [run.output_topic, *([dlq] if dlq else [])]
    async with OutputWatcher(run.bootstrap, topics, dead_letter_topics=(dlq,) if dlq else ()) as watcher:
        contender = spec.start(run)
        assert contender.pid is not None
        meter = ProcessMeter(contender.pid)
        try:
            result.startup_s = await _wait_first_output(contender, watcher, plan.startup_seconds)
            start, counted_from = _Snapshot.take(meter, api), watcher.count
            with progress(f"  {spec.key} {data.case}", total=len(data), unit="events") as shown:
                while watcher.count < len(data):
                    shown.update_to(watcher.count)
                    _check(contender, watcher)
                    meter.sample_rss()
                    if time.time() - start.wall > cap:
                        result.capped = True
                        break
                    await asyncio.sleep(0.1)
                shown.update_to(watcher.count)
            end = _Snapshot.take(meter, api)
            _window(result, start, end, watcher.count - counted_from)
            result.peak_rss_mb = meter.peak_rss_bytes() / 2**20
        except RunFailed as exc:
            result.error = str(exc)
            result.log = contender.log_tail(30)
        finally:
            await asyncio.to_thread(contender.stop, 20.0)
        result.events, result.dead_lettered = watcher.count, watcher.dead_lettered
        result.duplicates, result.broker_stamped = watcher.duplicates, watcher.broker_stamped
        if watcher.first_ms is not None and watcher.last_ms is not None and watcher.last_ms > watcher.first_ms:
            span = (watcher.last_ms - watcher.first_ms) / 1000
            result.elapsed_s = span
            result.events_per_s = (watcher.count - watcher.at_first_ms) / span
    return result


async def run_open(spec: ContenderSpec, run: RunTopics, warmup: Dataset, data: Dataset, plan: Plan, rate: float,
                   api: ApiServer | None, api_latency_ms: float | None) -> RunResult:
    result = RunResult(spec.key, data.case, api_latency_ms, "open", len(data), rate=rate)
    dlq = spec.dead_letter_topic(run)
    await create_run_topics(run.bootstrap, run.input_topic, run.output_topic, plan.partitions,
                            {dlq: 1} if dlq else None)
    result.load_avg = os.getloadavg()
    topics = [run.output_topic, *([dlq] if dlq else [])]
    async with OutputWatcher(run.bootstrap, topics, dead_letter_topics=(dlq,) if dlq else (),
                             keep_times=True) as watcher:
        contender = spec.start(run)
        assert contender.pid is not None
        meter = ProcessMeter(contender.pid)
        started_at: float | None = None
        producing: asyncio.Task[OpenLoopSchedule] | None = None
        try:
            await preload(run.bootstrap, run.input_topic, warmup)
            result.startup_s = await _wait_first_output(contender, watcher, plan.startup_seconds, len(warmup))
            start, counted_from = _Snapshot.take(meter, api), watcher.count
            producing = asyncio.create_task(produce_open_loop(run.bootstrap, run.input_topic, data, rate))
            want = len(warmup) + len(data)
            while not producing.done() or watcher.count < want:
                _check(contender, watcher)
                meter.sample_rss()
                if producing.done() and time.time() - producing.result().finished_at > plan.drain_seconds:
                    result.capped = True
                    break
                await asyncio.sleep(0.1)
            schedule = producing.result()
            started_at = schedule.started_at
            end = _Snapshot.take(meter, api)
            _window(result, start, end, watcher.count - counted_from)
            result.peak_rss_mb = meter.peak_rss_bytes() / 2**20
            result.producer_behind_ms = schedule.behind_max_ms
            _latencies(result, schedule.intended, watcher.appended_ms, end.wall)
        except RunFailed as exc:
            result.error = str(exc)
            result.log = contender.log_tail(30)
        finally:
            if producing is not None and not producing.done():
                producing.cancel()
            await asyncio.to_thread(contender.stop, 20.0)
        result.events = watcher.count - len(warmup)
        result.dead_lettered, result.duplicates = watcher.dead_lettered, watcher.duplicates
        result.broker_stamped = watcher.broker_stamped
        if watcher.last_ms is not None and started_at is not None:
            result.elapsed_s = watcher.last_ms / 1000 - started_at
            result.events_per_s = result.events / result.elapsed_s if result.elapsed_s > 0 else None
    return result


def _latencies(result: RunResult, intended: dict[str, float], appended_ms: dict[str, int], end_wall: float) -> None:
    values: list[tuple[float, bool]] = []  # (latency ms, lower bound only)
    for event_id, at in intended.items():
        stamp = appended_ms.get(event_id)
        if stamp is None:
            values.append(((end_wall - at) * 1000, True))
        else:
            values.append((stamp - at * 1000, False))
    if not values:
        return
    values.sort()
    result.undelivered = sum(1 for _, censored in values if censored)
    latencies = [v for v, _ in values]
    (result.p50_ms, i50), (result.p90_ms, _), (result.p99_ms, i99) = (
        percentile(latencies, 50), percentile(latencies, 90), percentile(latencies, 99))
    result.max_ms = latencies[-1]
    # a censored value below the percentile's rank makes the rank itself uncertain, so be strict
    censored_ranks = [i for i, (_, censored) in enumerate(values) if censored]
    result.p50_lower_bound = bool(censored_ranks) and censored_ranks[0] <= i50
    result.p99_lower_bound = bool(censored_ranks) and censored_ranks[0] <= i99
    start = min(intended.values())
    seconds: dict[int, list[float]] = {}
    for event_id, at in intended.items():
        stamp = appended_ms.get(event_id)
        latency = (end_wall - at) * 1000 if stamp is None else stamp - at * 1000
        seconds.setdefault(int(at - start), []).append(latency)
    result.p99_by_second_ms = [round(percentile(sorted(v), 99)[0], 1) for _, v in sorted(seconds.items())]


@dataclass
class SuiteReport:
    """Everything a suite run produced: results plus the facts needed to read them."""

    started_at: str
    bootstrap: str
    events: int
    partitions: int
    rate: float | None  # the open-loop rate asked for; None: auto, per group (see each result's rate)
    mean_value_bytes: dict[str, float] = field(default_factory=dict)
    hottest_share: dict[str, float] = field(default_factory=dict)
    zipf_expected_hottest_share: float = field(default_factory=zipf_share_of_hottest)
    api_round_trip_ms: dict[str, float] = field(default_factory=dict)
    api_server: str = ""
    uptime_before: str = ""
    uptime_after: str = ""
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 0)
    revision: str = field(default_factory=lambda: _revision())  # what "ours" was: commit, and uncommitted files
    results: list[RunResult] = field(default_factory=list)


def _revision() -> str:
    """The commit of the tree ours runs from, and how many files differ from it (read-only git)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return f"{commit}" + (f" + {len(changed)} uncommitted file(s)" if changed else "")


def _uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def _say(text: str) -> None:
    print(text, flush=True)


async def run_suite(plan: Plan) -> SuiteReport:
    report = SuiteReport(time.strftime("%Y-%m-%dT%H:%M:%S%z"), plan.bootstrap, plan.events, plan.partitions,
                         plan.rate)
    report.api_server = (f"sandbox app ({choose_event_loop('auto')}, access log off) in "
                         f"{plan.api_workers} separate process(es), SO_REUSEPORT")
    report.uptime_before = _uptime()
    _say(f"bench: broker {plan.bootstrap}; {report.uptime_before}")
    suite = uuid.uuid4().hex[:6]
    logs = plan.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    # Events are generated and encoded before anything is timed (open-loop data, whose size
    # depends on the rate, between runs: never inside a timed window).
    closed: dict[str, Dataset] = {}
    for case in plan.cases:
        closed[case] = await asyncio.to_thread(make_dataset, plan.events, case)
        report.mean_value_bytes[case] = closed[case].mean_value_bytes
        report.hottest_share[case] = closed[case].hottest_share
        _say(f"bench: {case}: {len(closed[case])} events, mean value {closed[case].mean_value_bytes:.0f} bytes, "
             f"hottest key {closed[case].hottest_share:.2%} of events")
    warm = await asyncio.to_thread(make_dataset, plan.warmup_events, "uniform", seed=5, prefix="warm")
    opened: dict[tuple[str, int], Dataset] = {}

    specs = [CONTENDERS[key] for key in plan.contenders]
    runs = 0

    async def one(spec: ContenderSpec, case: str, latency: float, api: ApiServer, mode: str,
                  rate: float = 0.0) -> RunResult:
        nonlocal runs
        runs += 1
        name = f"bench-{suite}-{runs:02d}-{spec.key.lower()}"
        run = RunTopics(name, plan.bootstrap, f"{name}.in", f"{name}.out", api.url, logs)
        api_latency = latency if spec.calls_api else None
        try:
            if mode == "closed":
                result = await run_closed(spec, run, closed[case], plan, api, api_latency)
            else:
                count = max(1, int(rate * plan.open_seconds))
                if (case, count) not in opened:
                    opened[case, count] = await asyncio.to_thread(make_dataset, count, case, seed=23, prefix="open")
                result = await run_open(spec, run, warm, opened[case, count], plan, rate, api, api_latency)
        except Exception as exc:  # noqa: BLE001 - one broken run must not lose the others
            result = RunResult(spec.key, case, api_latency, mode, plan.events, error=f"{type(exc).__name__}: {exc}")
        if not plan.keep_topics:
            await delete_topics_with_prefix(plan.bootstrap, name)
        _say(_one_line(result))
        return result

    for latency_index, latency in enumerate(plan.latencies_ms):
        with ApiServer(latency, plan.api_workers, logs) as api:
            report.api_round_trip_ms[f"{latency:g}"] = rtt = api.round_trip_ms()
            _say(f"bench: API server {api.url}, +{latency:g} ms, median round trip {rtt:.2f} ms ({report.api_server})")
            for case in plan.cases:
                # B0 makes no API calls: one run per case is enough
                group = [s for s in specs if s.calls_api or latency_index == 0]
                maxima: dict[str, float] = {}
                for spec in group:
                    result = await one(spec, case, latency, api, "closed")
                    report.results.append(result)
                    if result.events_per_s:
                        maxima[spec.key] = result.events_per_s
                rate = open_loop_rate(plan.rate, maxima)
                if rate is None:
                    continue
                _say(f"bench: open loop at {rate:,.0f} events/s for {plan.open_seconds:g} s")
                for spec in group:
                    if maxima.get(spec.key, rate) < 0.9 * rate:
                        report.results.append(RunResult(
                            spec.key, case, latency if spec.calls_api else None, "open", 0, rate=rate,
                            skipped=f"max {maxima[spec.key]:,.0f}/s < offered {rate:,.0f}/s"))
                        _say(_one_line(report.results[-1]))
                        continue
                    report.results.append(await one(spec, case, latency, api, "open", rate))
    report.uptime_after = _uptime()
    _say(f"bench: done; {report.uptime_after}")
    return report


def open_loop_rate(wanted: float | None, maxima: dict[str, float]) -> float | None:
    """The open-loop rate: ``wanted``; or, when None (auto), half the slowest max but B2's, at least 50/s."""
    if wanted is not None:
        return wanted if wanted > 0 else None
    usable = [rate for key, rate in maxima.items() if key != "B2"] or list(maxima.values())
    return max(50.0, round(min(usable) / 2, -1)) if usable else None


def _one_line(r: RunResult) -> str:
    where = f"{r.case:7} API {'-' if r.api_latency_ms is None else f'{r.api_latency_ms:g}ms':>5} {r.mode:6}"
    if r.skipped:
        return f"  {r.contender:4} {where} skipped: {r.skipped}"
    parts = [f"{r.events}/{r.target_events} events"]
    if r.events_per_s is not None:
        parts.append(f"{r.events_per_s:,.0f}/s" + (" (capped)" if r.capped else ""))
    if r.p50_ms is not None and r.p99_ms is not None:
        parts.append(f"p50 {r.p50_ms:.0f} ms p99 {r.p99_ms:.0f} ms")
    if r.cpu_s_per_1k is not None:
        parts.append(f"{r.cpu_s_per_1k:.3f} CPU s/1k ({r.cpu_cores:.2f} cores)")
    if r.peak_rss_mb is not None:
        parts.append(f"RSS {r.peak_rss_mb:.0f} MB")
    if r.api_cores is not None and r.other_cores is not None:
        parts.append(f"API {r.api_cores:.2f} cores, other {r.other_cores:.2f} cores")
    if r.dead_lettered:
        parts.append(f"{r.dead_lettered} dead-lettered")
    if r.error:
        parts.append(f"ERROR {r.error}")
    return f"  {r.contender:4} {where} " + ", ".join(parts)
