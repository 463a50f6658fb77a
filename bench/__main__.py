"""``python -m bench``: run the baselines and ours on the same broker and data; print a table.

    .venv/bin/python -m bench --quick                       # 5,000 events, API 0 ms, uniform
    .venv/bin/python -m bench                               # 100,000 events, 0 and 20 ms, both cases
    .venv/bin/python -m bench --events 20000 --only B0,B1,ours --latency-ms 20 --cases uniform

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the project's local broker (left running).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from bench.contenders import CONTENDERS, ours_at
from bench.data import CASES
from bench.report import markdown, write
from bench.runner import Plan, run_suite


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _rate(parser: argparse.ArgumentParser, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        parser.error(f"--rate takes events/s or 'auto', not {text!r}")


def parse_plan(argv: list[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, help="events per closed-loop run (default 100000; --quick 5000)")
    parser.add_argument("--latency-ms", help="API latencies to run, comma-separated (default 0,20; --quick 0)")
    parser.add_argument("--cases", help=f"key distributions: {','.join(CASES)} (default both; --quick uniform)")
    parser.add_argument("--only", default=",".join(CONTENDERS), help="contenders (default %(default)s)")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results; --quick bench/results/quick)")
    parser.add_argument("--rate", default="500", help="open-loop rate, events/s; 0 skips the latency runs; "
                        "'auto': half the slowest closed-loop max in each group, B2 aside (default %(default)s)")
    parser.add_argument("--open-seconds", type=float, help="open-loop duration (default 15; --quick 6)")
    parser.add_argument("--max-seconds", type=float, default=150.0, help="cap on a closed run's processing time")
    parser.add_argument("--b2-max-seconds", type=float, default=30.0, help="cap for B2, the naive agent")
    parser.add_argument("--api-workers", type=int, default=1, help="API server processes (SO_REUSEPORT)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--keep-topics", action="store_true", help="do not delete each run's topics")
    parser.add_argument("--quick", action="store_true", help="small, fast defaults for development and smoke checks")
    parser.add_argument("--ours-at", metavar="REV", help="also run ours as committed at this git revision "
                        "(a worktree), as the contender ours-at-<commit>: before/after in one run")
    args = parser.parse_args(argv)
    if args.ours_at:
        spec = ours_at(args.ours_at)
        CONTENDERS[spec.key] = spec
        if args.only == parser.get_default("only"):
            args.only += f",{spec.key}"

    quick = args.quick
    contenders = _list(args.only)
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {unknown}; choose from {list(CONTENDERS)}")
    cases = _list(args.cases or ("uniform" if quick else ",".join(CASES)))
    if any(case not in CASES for case in cases):
        parser.error(f"--cases takes {CASES}")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        from streams.kafka.local import start_local_broker

        bootstrap = start_local_broker()
    return Plan(
        events=args.events or (5000 if quick else 100_000),
        latencies_ms=[float(v) for v in _list(args.latency_ms or ("0" if quick else "0,20"))],
        cases=cases,
        contenders=contenders,
        out=args.out or Path("bench/results/quick" if quick else "bench/results"),
        bootstrap=bootstrap,
        partitions=args.partitions,
        rate=None if args.rate == "auto" else _rate(parser, args.rate),
        open_seconds=args.open_seconds or (6.0 if quick else 15.0),
        max_seconds=args.max_seconds,
        b2_max_seconds=args.b2_max_seconds,
        api_workers=args.api_workers,
        keep_topics=args.keep_topics,
    )


def main(argv: list[str] | None = None) -> None:
    plan = parse_plan(argv)
    report = asyncio.run(run_suite(plan))
    paths = write(report, plan.out)
    print()
    print(markdown(report))
    print("written: " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
