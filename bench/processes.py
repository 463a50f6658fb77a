"""Contender processes and what they cost: CPU seconds (user+sys) and peak resident memory.

    meter = ProcessMeter(pid)
    meter.cpu_seconds()     # this process and its children, so far
    meter.peak_rss_bytes()  # the kernel's high-water mark (VmHWM), else the largest sample
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

import psutil


class Contender(Protocol):
    """What the runner needs from a started contender (``streams.worker_process.ChildProcess``)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def alive(self) -> bool: ...

    def stop(self, timeout: float = 30.0) -> int | None: ...

    def log_tail(self, lines: int = 40) -> str: ...


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
