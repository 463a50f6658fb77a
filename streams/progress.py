"""Progress of long commands: a live bar in a terminal, plain lines in logs and CI.

    with progress("dlq replay", total=len(letters), unit="letters") as shown:
        for letter in letters:
            ...
            shown.advance()

Where it goes is decided once, here, for every command (``streams produce``, ``streams dlq
list|replay``, the catalog source, the bench):

- the progress stream (standard error unless told otherwise) is a terminal: a tqdm bar,
  redrawn in place (carriage returns) a few times a second; log records and ``write()`` lines
  are printed above it, so they do not tear it;
- anything else (a pipe, a file, CI): plain lines, one every ``interval`` seconds and one each
  time another ``step`` percent of a known total is done (at most one a second), then a last
  one; never a carriage return, so a log stays one line per report::

      dlq replay: 2000/5000 letters (40%), 1843 letters/s, 1.1 s
      dlq replay: 5000/5000 letters (100%), 1910 letters/s, 2.6 s, done

``STREAMS_PROGRESS`` overrides the choice: ``bar``, ``lines`` or ``off``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

MODES = ("auto", "bar", "lines", "off")
MODE_VARIABLE = "STREAMS_PROGRESS"


def progress_mode(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: ``STREAMS_PROGRESS`` if set, else a bar only on a terminal."""
    wanted = os.environ.get(MODE_VARIABLE, "auto").strip().lower() or "auto"
    if wanted not in MODES:
        raise ValueError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, got {wanted!r}")
    if wanted != "auto":
        return wanted
    stream = stream if stream is not None else sys.stderr
    try:
        interactive = stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        interactive = False
    return "bar" if interactive else "lines"


class Progress:
    """One task's progress. Use ``progress()`` to make one; it is also a context manager.

    ``advance(n)`` counts work done, ``update_to(n)`` sets the count (for a count read from
    elsewhere), ``set_total`` gives or changes the total, ``note`` shows a short status after the
    count (e.g. how many of the letters read matched), and ``write`` prints a line of the
    command's output (standard output by default) without tearing the bar.
    """

    def __init__(self, description: str, *, total: int | None = None, unit: str = "records",
                 stream: TextIO | None = None, interval: float = 5.0, step: float = 10.0,
                 min_gap: float = 1.0, mode: str | None = None) -> None:
        self.description = description
        self.unit = unit
        self.total = total
        self.count = 0
        self._stream = stream if stream is not None else sys.stderr
        self._mode = mode or progress_mode(self._stream)
        self._interval = interval
        self._step = step
        self._min_gap = min_gap
        self._note = ""
        self._started = time.monotonic()
        self._last_line = self._started
        self._last_step = 0
        self._closed = False
        self._bar: Any = None
        self._redirect: contextlib.ExitStack | None = None
        if self._mode == "bar":
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=total, desc=description, unit=f" {unit}", file=self._stream, dynamic_ncols=True,
                             mininterval=0.1, smoothing=0.1, leave=True)
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm())  # log records go above the bar

    @property
    def mode(self) -> str:
        return self._mode

    def advance(self, n: int = 1) -> None:
        self.update_to(self.count + n)

    def update_to(self, count: int) -> None:
        if count == self.count:
            return
        if self._bar is not None:
            self._bar.update(count - self.count)
        self.count = count
        if self._mode == "lines":
            self._maybe_line()

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def note(self, text: str) -> None:
        self._note = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def write(self, line: str, *, file: TextIO | None = None) -> None:
        """Print one line of output (not progress): above the bar in a terminal, as is elsewhere."""
        target = file if file is not None else sys.stdout
        if self._bar is not None:
            self._bar.write(line, file=target)
        else:
            print(line, file=target, flush=True)

    def close(self, *, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            if self._redirect is not None:
                self._redirect.close()
        elif self._mode == "lines" and (self.count or self.total is not None):  # silent if it never began
            self._line("stopped" if failed else "done")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(failed=kind is not None)

    # ------------------------------------------------------------------ lines ---

    def _maybe_line(self) -> None:
        since = time.monotonic() - self._last_line
        due = since >= self._interval
        if self.total and self._step > 0 and since >= self._min_gap:
            reached = int(self.count * 100 / self.total // self._step)
            if reached > self._last_step:
                self._last_step = reached
                due = due or self.count < self.total  # the last step is the closing line's
        if due:
            self._line()

    def _line(self, suffix: str = "") -> None:
        self._last_line = now = time.monotonic()
        elapsed = now - self._started
        done = f"{self.count}/{self.total} {self.unit}" if self.total is not None else f"{self.count} {self.unit}"
        if self.total:
            done += f" ({self.count * 100 // self.total}%)"
        parts = [done]
        if elapsed > 0 and self.count:
            parts.append(f"{self.count / elapsed:.0f} {self.unit}/s")
        parts.append(f"{elapsed:.1f} s")
        if self._note:
            parts.append(self._note)
        if suffix:
            parts.append(suffix)
        print(f"{self.description}: " + ", ".join(parts), file=self._stream, flush=True)


def progress(description: str, *, total: int | None = None, unit: str = "records", stream: TextIO | None = None,
             interval: float = 5.0, step: float = 10.0, min_gap: float = 1.0) -> Progress:
    """A progress display for one task; see the module's doc for where it goes and how it looks."""
    return Progress(description, total=total, unit=unit, stream=stream, interval=interval, step=step,
                    min_gap=min_gap)
