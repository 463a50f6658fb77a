"""Contender processes and what they cost: CPU seconds (user+sys) and peak resident memory.

    meter = ProcessMeter(pid)
    meter.cpu_seconds()     # this process and its children, so far
    meter.peak_rss_bytes()  # the kernel's high-water mark (VmHWM), else the largest sample
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import IO, Protocol

import psutil


class Contender(Protocol):
    """What the runner needs from a started contender (``WorkerProcess`` has the same shape)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def alive(self) -> bool: ...

    def stop(self, timeout: float = 30.0) -> int | None: ...

    def log_tail(self, lines: int = 40) -> str: ...


class CommandProcess:
    """A baseline: any command in a child process of its own session; output to a log file."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> CommandProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self._process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class ProcessMeter:
    """CPU and memory of one process tree, read with psutil (and /proc for the RSS peak)."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._cpu_seen: dict[int, float] = {}
        self._rss_sampled = 0

    def _tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [self._process, *self._process.children(recursive=True)]
        return []

    def cpu_seconds(self) -> float:
        """user+sys of the process and its live children (children keep their last reading)."""
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                self._cpu_seen[process.pid] = times.user + times.system
        return sum(self._cpu_seen.values())

    def sample_rss(self) -> None:
        total = 0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        self._rss_sampled = max(self._rss_sampled, total)

    def peak_rss_bytes(self) -> int:
        """The kernel's VmHWM of each process in the tree, summed; the sampled peak elsewhere."""
        self.sample_rss()
        peak = 0
        for process in self._tree():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak += int(line.split()[1]) * 1024
        return max(peak, self._rss_sampled)


def system_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot."""
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq", "steal")  # guest time is already in user
    return sum(getattr(times, name, 0.0) for name in busy)
