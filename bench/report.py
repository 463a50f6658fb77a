"""The suite's outputs: a Markdown table with ratios, results.json, results.csv and a PNG chart."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

from bench.contenders import CONTENDERS
from bench.runner import RunResult, SuiteReport


def _find(report: SuiteReport, contender: str, case: str, latency: float, mode: str) -> RunResult | None:
    for r in report.results:
        same_latency = r.api_latency_ms is None or r.api_latency_ms == latency
        if r.contender == contender and r.case == case and r.mode == mode and same_latency:
            return r
    return None


def _groups(report: SuiteReport) -> Iterator[tuple[float, str]]:
    latencies = sorted({r.api_latency_ms for r in report.results if r.api_latency_ms is not None})
    if not latencies:  # B0 alone
        latencies = [0.0]
    cases = list(dict.fromkeys(r.case for r in report.results))
    for latency in latencies:
        for case in cases:
            yield latency, case


def _contenders(report: SuiteReport) -> list[str]:
    present = {r.contender for r in report.results}
    return [key for key in CONTENDERS if key in present]


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _latency(value: float | None, lower_bound: bool) -> str:
    return "–" if value is None else ("≥" if lower_bound else "") + f"{value:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def markdown(report: SuiteReport) -> str:
    lines = [
        f"# streams benchmark, {report.started_at}",
        "",
        f"{report.cpu_count} cores; machine load before: {report.uptime_before}; after: {report.uptime_after}. "
        f"Tree `{report.revision}`. Broker `{report.bootstrap}`, {report.partitions} partitions in and out. "
        + ", ".join(f"{case}: mean value {size:.0f} B" for case, size in report.mean_value_bytes.items())
        + f". API server: {report.api_server}.",
        "",
        f"events/s: closed loop, {report.events:,} preloaded events (fewer where capped), output count over the "
        "span of the output's broker append times. p50/p99: open loop at "
        + (f"{report.rate:g} events/s" if report.rate is not None else
           "half the slowest closed-loop max of each group, B2 aside (`open /s`)")
        + ", broker append time of the output minus the intended send time. "
        "CPU s/1k: the contender's user+sys per 1,000 events (closed loop). cores: its CPU s per wall s. "
        "API/other: cores used by the API server / by everything else (broker, bench-external neighbours) "
        "during the closed run.",
        "",
        "| case | API ms | contender | events/s | open /s | p50 ms | p99 ms | CPU s/1k | cores | peak RSS MB "
        "| API cores | other cores | notes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for latency, case in _groups(report):
        for key in _contenders(report):
            closed = _find(report, key, case, latency, "closed")
            opened = _find(report, key, case, latency, "open")
            if closed is None and opened is None:
                continue
            notes = _notes(closed, opened)
            c = closed or RunResult(key, case, latency, "closed", 0)
            o = opened or RunResult(key, case, latency, "open", 0)
            api = "–" if c.api_latency_ms is None and closed is not None else f"{latency:g}"
            lines.append(
                f"| {case} | {api} | {key} | {_num(c.events_per_s)}{'*' if c.capped else ''} "
                f"| {_num(o.rate)} | {_latency(o.p50_ms, o.p50_lower_bound)} | {_latency(o.p99_ms, o.p99_lower_bound)} "
                f"| {_num(c.cpu_s_per_1k, 3)} | {_num(c.cpu_cores, 2)} | {_num(c.peak_rss_mb)} "
                f"| {_num(c.api_cores, 2)} | {_num(c.other_cores, 2)} | {notes} |"
            )
    lines += ["", "`*` capped run: the rate of what was done within the cap. `≥`: some events were still "
              "undelivered when the run ended, so the percentile is a lower bound. `–`: not run or not applicable "
              "(B0 makes no API calls).", ""]
    lines += _ratios(report)
    lines += _before_after(report)
    lines += _ceilings(report)
    lines += ["## Contenders", ""]
    lines += [f"- **{spec.key}**: {spec.title}" for spec in CONTENDERS.values() if spec.key in _contenders(report)]
    return "\n".join(lines) + "\n"


def _notes(closed: RunResult | None, opened: RunResult | None) -> str:
    notes: list[str] = []
    for r in (closed, opened):
        if r is None:
            continue
        tag = r.mode
        if r.error:
            notes.append(f"{tag}: error: {r.error}")
        if r.skipped:
            notes.append(f"{tag}: not run, {r.skipped}")
        if r.capped:
            notes.append(f"{tag}: capped, {r.events:,}/{r.target_events:,} done")
        if r.dead_lettered:
            notes.append(f"{tag}: {r.dead_lettered} dead-lettered")
        if r.mode == "open" and r.undelivered:
            notes.append(f"open: {r.undelivered:,} undelivered at end")
        if not r.broker_stamped:
            notes.append(f"{tag}: output not broker-stamped, arrival times used")
    return "; ".join(notes)


def _ratios(report: SuiteReport) -> list[str]:
    lines = ["## Ratios (ours ÷ baseline)", "",
             "| case | API ms | events/s ours÷B0 | ours÷B1 | ours÷B2 | CPU s/1k ours÷B1 | p99 ours÷B1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for latency, case in _groups(report):
        ours = _find(report, "ours", case, latency, "closed")
        if ours is None:
            continue
        b0, b1, b2 = (_find(report, k, case, latency, "closed") for k in ("B0", "B1", "B2"))
        ours_open, b1_open = _find(report, "ours", case, latency, "open"), _find(report, "B1", case, latency, "open")
        lines.append(
            f"| {case} | {latency:g} | {_ratio(ours.events_per_s, b0.events_per_s if b0 else None)} "
            f"| {_ratio(ours.events_per_s, b1.events_per_s if b1 else None)} "
            f"| {_ratio(ours.events_per_s, b2.events_per_s if b2 else None)} "
            f"| {_ratio(ours.cpu_s_per_1k, b1.cpu_s_per_1k if b1 else None)} "
            f"| {_ratio(ours_open.p99_ms if ours_open else None, b1_open.p99_ms if b1_open else None)} |"
        )
    return [*lines, ""]


def _before_after(report: SuiteReport) -> list[str]:
    """Ours against ours at an earlier commit (``--ours-at``), each measured against B1 in this run."""
    earlier = sorted({r.contender for r in report.results if r.contender.startswith("ours-at-")})
    lines = []
    for key in earlier:
        lines += [f"## Ours against {key}, in the same run", "",
                  f"| case | API ms | {key} ÷ B1 | ours ÷ B1 | change | CPU s/1k {key} / ours |",
                  "|---|---:|---:|---:|---:|---|"]
        for latency, case in _groups(report):
            ours, before, b1 = (_find(report, k, case, latency, "closed") for k in ("ours", key, "B1"))
            if ours is None or before is None or b1 is None or not b1.events_per_s or not before.events_per_s:
                continue
            was, now = before.events_per_s / b1.events_per_s, ours.events_per_s / b1.events_per_s
            lines.append(f"| {case} | {latency:g} | {was:.3f} | {now:.3f} | {now / was - 1:+.1%} "
                         f"| {_num(before.cpu_s_per_1k, 3)} / {_num(ours.cpu_s_per_1k, 3)} |")
        lines.append("")
    return lines


def _ceilings(report: SuiteReport) -> list[str]:
    share = report.hottest_share.get("zipf")
    if share is None:
        return []
    lines = ["## The ceiling per-key order puts on the Zipf case", "",
             f"Hottest key: {share:.1%} of events (Zipf s=1.1 over 10,000 keys; expected "
             f"{report.zipf_expected_hottest_share:.1%}). Ours processes one key's events one after another, so it "
             "cannot exceed 1 / (API time × hottest share) events/s; B1 is unordered and not bound by it. API time "
             "= the median round trip of one call (added latency included) measured from the bench process with "
             "the API otherwise idle; under load, and with ours' own per-event work, it is longer, so the real "
             "ceiling is lower.", "",
             "| API ms | round trip ms | ceiling events/s | ours events/s (zipf) | B1 events/s (zipf) |",
             "|---:|---:|---:|---:|---:|"]
    for latency_text, rtt in report.api_round_trip_ms.items():
        latency = float(latency_text)
        ceiling = 1000 / (rtt * share)
        ours, b1 = _find(report, "ours", "zipf", latency, "closed"), _find(report, "B1", "zipf", latency, "closed")
        lines.append(f"| {latency:g} | {rtt:.2f} | {ceiling:,.0f} | {_num(ours.events_per_s if ours else None)} "
                     f"| {_num(b1.events_per_s if b1 else None)} |")
    return [*lines, ""]


def write(report: SuiteReport, out: Path) -> dict[str, Path]:
    """Write results.md, results.json, results.csv and results.png (when matplotlib is there)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "results.md", "json": out / "results.json", "csv": out / "results.csv"}
    paths["json"].write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")  # first: the raw data
    paths["md"].write_text(markdown(report))
    columns = [f.name for f in fields(RunResult) if f.name != "log"]
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for result in report.results:
            writer.writerow(result.as_dict())
    chart = out / "results.png"
    if _chart(report, chart):
        paths["png"] = chart
    return paths


def _chart(report: SuiteReport, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed (pip install -e '.[bench]'); no chart")
        return False
    groups = list(_groups(report))
    keys = _contenders(report)
    labels = [f"{case}\n{latency:g} ms" for latency, case in groups]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(keys))
    for n, key in enumerate(keys):
        xs = [g + (n - (len(keys) - 1) / 2) * width for g in range(len(groups))]
        rates = [(_find(report, key, case, lat, "closed") or RunResult(key, case, lat, "closed", 0)).events_per_s or 0
                 for lat, case in groups]
        p99s = [(_find(report, key, case, lat, "open") or RunResult(key, case, lat, "open", 0)).p99_ms or 0
                for lat, case in groups]
        left.bar_label(left.bar(xs, rates, width, label=key), fmt="%.0f", fontsize=7)
        right.bar_label(right.bar(xs, p99s, width, label=key), fmt="%.0f", fontsize=7)
    left.set_title("max throughput (closed loop), events/s")
    offered = "auto rate" if report.rate is None else f"{report.rate:g} events/s"
    right.set_title(f"p99 end-to-end latency at {offered} (open loop), ms")
    for axis in (left, right):
        axis.set_xticks(range(len(groups)), labels)
        if any(bar.get_height() > 0 for bar in axis.patches):
            axis.set_yscale("log")  # B2 at 20 ms is two orders of magnitude below the rest
            axis.legend()
        else:
            axis.text(0.5, 0.5, "not run", ha="center", transform=axis.transAxes)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"streams vs baselines ({report.cpu_count} cores, {report.uptime_before})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
