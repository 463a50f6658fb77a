"""streams.progress: a bar on a terminal, plain lines elsewhere, nothing when switched off."""

from __future__ import annotations

import io
import re

import pytest

from streams.progress import Progress, progress, progress_mode


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_follows_the_stream_unless_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMS_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress_mode(FakeTerminal()) == "bar"
    assert progress_mode(io.StringIO()) == "lines"
    monkeypatch.setenv("TERM", "dumb")
    assert progress_mode(FakeTerminal()) == "lines"
    monkeypatch.setenv("STREAMS_PROGRESS", "off")
    assert progress_mode(FakeTerminal()) == "off"
    monkeypatch.setenv("STREAMS_PROGRESS", "sparkles")
    with pytest.raises(ValueError, match="STREAMS_PROGRESS must be one of"):
        progress_mode(io.StringIO())


def test_off_a_terminal_it_prints_a_line_per_step_and_a_last_one_never_a_carriage_return(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMS_PROGRESS", raising=False)
    stream = io.StringIO()
    with progress("dlq replay", total=200, unit="letters", stream=stream, interval=3600, step=25,
                  min_gap=0) as shown:
        for n in range(200):
            shown.advance()
            if n == 99:
                shown.write("an output line")
    text = stream.getvalue()
    assert "\r" not in text
    counts = [int(m) for m in re.findall(r"^dlq replay: (\d+)/200 letters \(\d+%\)", text, re.MULTILINE)]
    assert counts == [50, 100, 150, 200]
    assert text.splitlines()[-1].endswith(", done")
    assert capsys.readouterr().out == "an output line\n"  # output goes to stdout, progress does not


def test_steps_come_at_most_one_a_min_gap_so_a_quick_task_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMS_PROGRESS", raising=False)
    stream = io.StringIO()
    with progress("produce", total=5000, unit="events", stream=stream) as shown:
        for _ in range(5000):
            shown.advance()
    assert stream.getvalue().count("\n") == 1 and "5000/5000 events (100%)" in stream.getvalue()


def test_an_unknown_total_reports_every_interval_with_its_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMS_PROGRESS", raising=False)
    stream = io.StringIO()
    with progress("catalog source", unit="pages", stream=stream, interval=0) as shown:
        shown.note("100 products")
        shown.update_to(1)
        shown.note("200 products")
        shown.update_to(2)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("catalog source: 1 pages, ") and lines[0].endswith("100 products")
    assert lines[-1].startswith("catalog source: 2 pages, ") and lines[-1].endswith("200 products, done")


def test_a_failed_task_says_so_and_one_that_never_began_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMS_PROGRESS", raising=False)
    stream = io.StringIO()
    with pytest.raises(RuntimeError), progress("produce", total=10, unit="events", stream=stream) as shown:
        shown.advance(3)
        raise RuntimeError("broker gone")
    assert stream.getvalue().splitlines()[-1].endswith(", stopped")
    quiet = io.StringIO()
    with progress("dlq replay", unit="letters", stream=quiet):
        pass
    assert quiet.getvalue() == ""


def test_on_a_terminal_it_is_a_bar_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMS_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal = FakeTerminal()
    shown = Progress("dlq replay", total=40, unit="letters", stream=terminal)
    assert shown.mode == "bar"
    for _ in range(40):
        shown.advance()
    shown.close()
    text = terminal.getvalue()
    assert "\r" in text and "40/40" in text and "dlq replay: 100%" in text


def test_switched_off_it_prints_no_progress_but_still_the_output(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMS_PROGRESS", "off")
    stream = FakeTerminal()
    with progress("dlq list: read", total=5, unit="letters", stream=stream) as shown:
        shown.advance(5)
        shown.write("0:1  letter")
    assert stream.getvalue() == ""
    assert capsys.readouterr().out == "0:1  letter\n"
