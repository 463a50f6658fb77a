"""Client errors that repeat are logged once, then counted, with one summary line per interval.

    handler.addFilter(RepeatedErrors(interval=10.0, on_repeat=metrics_callback))

Kafka clients log every failed connection and every failed request: while a broker is away
that is hundreds of lines a second, all alike. For records of the client libraries' loggers
(``aiokafka``, ``kafka``, ``faust``, ``mode``) at warning or above, the filter lets the first of a
kind through, suppresses the next ones of that kind, and writes one line per ``interval`` per
kind with how many there were, and one more when the kind has been quiet for an interval (the
recovery). A kind is the logger and the message template with its numbers, hosts and ports
replaced, so "node 1" and "node 2" are one kind. Every record, shown or not, is counted through
``on_repeat`` (the worker's ``streams_client_errors_total``).

Written by hand: logging's own filters hold no state across records, and the summaries need
a clock that runs when the records stop (a daemon thread).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode")
_VARYING = re.compile(r"\d+(\.\d+)*|0x[0-9a-f]+|'[^']*'|\"[^\"]*\"", re.IGNORECASE)
MAX_KINDS = 200  # past this, new kinds pass unfiltered rather than grow the table


@dataclass(slots=True)
class _Kind:
    logger: str
    level: int
    template: str
    first_at: float
    last_at: float
    window_start: float
    suppressed: int = 0  # since the last line written for this kind


class RepeatedErrors(logging.Filter):
    """See the module docstring. ``clock`` is for tests."""

    def __init__(self, interval: float = 10.0, *, on_repeat: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, flush_thread: bool = True) -> None:
        super().__init__()
        self.interval = interval
        self.on_repeat = on_repeat
        self._clock = clock
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._lock = threading.Lock()
        self._emit: Callable[[logging.LogRecord], object] | None = None
        self._closed = threading.Event()
        if flush_thread:
            threading.Thread(target=self._flush_forever, name="repeated-errors", daemon=True).start()

    def attach(self, handler: logging.Handler) -> None:
        """Filter ``handler``'s records, and write the summary lines through it."""
        handler.addFilter(self)
        self._emit = handler.handle

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(CLIENT_LOGGERS) \
                or getattr(record, "repeat_summary", False):
            return True
        template = _VARYING.sub("N", str(record.msg))[:200]
        key = (record.name, template)
        if self.on_repeat is not None:
            self.on_repeat(record.name.split(".")[0], template)
        now = self._clock()
        ended: list[tuple[_Kind, str]] = []
        with self._lock:
            kind = self._kinds.get(key)
            if kind is not None and now - kind.last_at >= self.interval:  # quiet for a while: it had ended
                ended = self._ending(kind)
                del self._kinds[key]
                kind = None
            if kind is None:
                if len(self._kinds) < MAX_KINDS:
                    self._kinds[key] = _Kind(record.name, record.levelno, template, now, now, now)
                shown = True  # the first one is always shown
            else:
                kind.last_at = now
                kind.suppressed += 1
                shown = False
        for ended_kind, message in ended:
            self._write(ended_kind, message)
        if not shown:
            self.flush()
        return shown

    def flush(self) -> None:
        """Write the summaries that are due: a kind's count once per interval, and its end."""
        now = self._clock()
        lines: list[tuple[_Kind, str]] = []
        with self._lock:
            for key, kind in list(self._kinds.items()):
                if kind.suppressed and now - kind.window_start >= self.interval:
                    lines.append((kind, f"repeated {kind.suppressed} times in the last "
                                        f"{now - kind.window_start:.0f} s: {kind.template}"))
                    kind.suppressed, kind.window_start = 0, now
                elif now - kind.last_at >= self.interval:
                    lines += self._ending(kind)
                    del self._kinds[key]
        for kind, message in lines:
            self._write(kind, message)

    @staticmethod
    def _ending(kind: _Kind) -> list[tuple[_Kind, str]]:
        lines = []
        if kind.suppressed:
            lines.append((kind, f"repeated {kind.suppressed} more times: {kind.template}"))
        if kind.last_at > kind.first_at:
            lines.append((kind, f"stopped after {kind.last_at - kind.first_at:.0f} s: {kind.template}"))
        return lines

    def _write(self, kind: _Kind, message: str) -> None:
        emit = self._emit
        if emit is None:
            return
        record = logging.LogRecord(kind.logger, kind.level, __file__, 0, message, None, None)
        record.repeat_summary = True
        emit(record)

    def close(self) -> None:
        """Stop the flush thread (a newer filter replaces this one)."""
        self._closed.set()

    def _flush_forever(self) -> None:
        while not self._closed.wait(max(0.5, self.interval / 4)):
            with contextlib.suppress(Exception):  # a summary line must never kill its thread
                self.flush()
