"""Progress of `streams dlq replay` over 5,000 dead letters: a bar on a terminal, plain lines in a pipe.

Each DLQ is filled directly (raw bytes with the headers a worker writes, as streams/dlq.py reads
them), which is far faster than running a worker on 5,000 poison records. The CLI runs as a
real process: once with a pseudo-terminal as its stdout and stderr, once with pipes. Either way
each letter must reach the input topic exactly once.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections import Counter
from pathlib import Path

import pytest

from streams.dlq import DeadLetterFilter, iter_dead_letters
from streams.kafka.clients import read_records
from streams.names import Header, dlq_topic
from streams.progress import progress
from tests.integration.harness import fill_dlq

pytestmark = pytest.mark.integration

LETTERS = 5_000
PARTITIONS = 4


def _cli_env(bootstrap: str, pipeline: str, input_topic: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMS_PROGRESS"}  # the automatic choice
    return {**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAMS_APP": "pipelines.orders:pipeline",
            "STREAMS_PIPELINE": pipeline, "STREAMS_INPUT_TOPIC": input_topic, "TERM": "xterm"}


# 1,000 letters a second (after a first burst of 1,000): the replay takes about 4 s, long enough for a
# few reports in either mode
_REPLAY = [sys.executable, "-m", "streams", "dlq", "replay", "--rate", "1000"]


def _run_in_a_terminal(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run the replay with a pseudo-terminal (100 columns) as stdout and stderr; (exit code, all it wrote)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    process = subprocess.Popen(_REPLAY, stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env, cwd=cwd,
                               close_fds=True)
    os.close(child)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=300)
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


async def _replayed_once(bootstrap: str, input_topic: str, pipeline: str) -> None:
    """The input topic holds exactly one record per dead letter, each naming a different one (read
    whole: transaction markers take offsets, so the end offsets are more than the records)."""
    records = await read_records(bootstrap, [input_topic], idle_timeout=5, deadline=120)
    sources = Counter(dict(r.headers)[Header.REPLAY_OF].decode() for r in records)
    assert len(records) == LETTERS and len(sources) == LETTERS
    assert all(s.startswith(f"{dlq_topic(pipeline)}:") for s in sources)
    assert {dict(r.headers)[Header.EVENT_ID].decode() for r in records} == {f"evt-{n}" for n in range(LETTERS)}


async def test_dlq_replay_in_a_terminal_redraws_a_bar_and_replays_each_letter_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    pipeline, input_topic = f"progress-tty-{unique}", f"progress-tty-{unique}.in"
    await fill_dlq(kafka_bootstrap, pipeline, input_topic, LETTERS, PARTITIONS)

    code, output = await asyncio.to_thread(_run_in_a_terminal, _cli_env(kafka_bootstrap, pipeline, input_topic),
                                           tmp_path)

    assert code == 0, output
    bar = re.compile(r"dlq replay to \S+:\s+(\d+)%\|[^|\r\n]*\|\s*(\d+)/5000 ")
    redraws = [(int(percent), int(count)) for percent, count in bar.findall(output)]
    assert output.count("\r") >= 3, output[-2000:]
    assert len(redraws) >= 2 and redraws[-1] == (100, LETTERS), output[-2000:]
    assert [count for _, count in redraws] == sorted(count for _, count in redraws)  # it only moves forward
    assert re.search(r"dlq replay: read:.*\|\s*5000/5000 ", output), output[-2000:]
    assert f"replayed {LETTERS} to {input_topic}, skipped 0" in output
    await _replayed_once(kafka_bootstrap, input_topic, pipeline)


async def test_dlq_replay_in_a_pipe_prints_plain_lines_with_counts_and_replays_each_letter_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    pipeline, input_topic = f"progress-pipe-{unique}", f"progress-pipe-{unique}.in"
    await fill_dlq(kafka_bootstrap, pipeline, input_topic, LETTERS, PARTITIONS)

    done = await asyncio.to_thread(subprocess.run, _REPLAY, env=_cli_env(kafka_bootstrap, pipeline, input_topic),
                                   cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   timeout=300)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "\r" not in done.stdout + done.stderr
    line = re.compile(rf"^dlq replay to {re.escape(input_topic)}: (\d+)/5000 letters \((\d+)%\), .*s(, done)?$",
                      re.MULTILINE)
    reports = [(int(count), int(percent), bool(last)) for count, percent, last in line.findall(done.stderr)]
    assert len(reports) >= 2, done.stderr
    assert reports[-1] == (LETTERS, 100, True), done.stderr
    assert [count for count, _, _ in reports] == sorted(count for count, _, _ in reports)
    assert all(not last for _, _, last in reports[:-1])
    assert re.search(r"^dlq replay: read: 5000/5000 letters \(100%\), .*, 5000 matched, done$", done.stderr,
                     re.MULTILINE), done.stderr
    assert f"replayed {LETTERS} to {input_topic}, skipped 0" in done.stdout
    await _replayed_once(kafka_bootstrap, input_topic, pipeline)

    again = await asyncio.to_thread(subprocess.run, _REPLAY, env=_cli_env(kafka_bootstrap, pipeline, input_topic),
                                    cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"replayed 0 to {input_topic}, skipped {LETTERS}" in again.stdout
    await _replayed_once(kafka_bootstrap, input_topic, pipeline)  # still once each


async def test_dead_letters_are_handed_out_as_they_are_read_not_after_the_whole_dlq(
    kafka_bootstrap: str, unique: str
) -> None:
    pipeline, input_topic = f"progress-list-{unique}", f"progress-list-{unique}.in"
    await fill_dlq(kafka_bootstrap, pipeline, input_topic, LETTERS, PARTITIONS)
    read_when_handed: list[int] = []
    with progress("dlq list: read", unit="letters", stream=io.StringIO()) as shown:
        async for _ in iter_dead_letters(kafka_bootstrap, pipeline, DeadLetterFilter(kind="poison"), progress=shown):
            read_when_handed.append(shown.count)
    assert len(read_when_handed) == LETTERS and shown.total == LETTERS
    assert read_when_handed[0] < LETTERS // 2  # the first letter came long before the last was read
    none = [letter async for letter in iter_dead_letters(kafka_bootstrap, pipeline, DeadLetterFilter(kind="transient"))]
    assert none == []
