"""The enrichment API for benchmarks: the sandbox app in processes of its own.

    with ApiServer(latency_ms=20, workers=1, log_dir=Path("bench/results/logs")) as api:
        api.url               # http://127.0.0.1:<port>
        api.cpu_seconds()     # user+sys of all its processes so far

It serves the sandbox's own ``build_app`` (same routes, same customers, same added latency),
with the access log off and uvloop when it is installed. Each worker is a separate process
bound with SO_REUSEPORT to the same port, so the kernel spreads connections over them and
the server never shares a GIL with the pipeline under test.

Run one worker alone: ``python -m bench.api_server --port 8080 --latency-ms 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

import streams.runtime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ApiServer:
    """``workers`` API server processes on one loopback port, with an added latency."""

    def __init__(self, latency_ms: float, workers: int, log_dir: Path) -> None:
        self.latency_ms = latency_ms
        self.workers = workers
        self.port = free_port()
        self._log_path = log_dir / f"api-{latency_ms:g}ms.log"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def start(self) -> ApiServer:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        command = [sys.executable, "-m", "bench.api_server", "--port", str(self.port),
                   "--latency-ms", str(self.latency_ms)]
        for _ in range(self.workers):
            self._processes.append(subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True))
        self._wait_healthy(deadline=30.0)
        return self

    def _wait_healthy(self, deadline: float) -> None:
        end = time.monotonic() + deadline
        while True:
            if any(p.poll() is not None for p in self._processes):
                raise RuntimeError(f"API server exited at start; see {self._log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"API server not healthy after {deadline} s; see {self._log_path}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self._processes:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(process.pid).cpu_times()
                total += times.user + times.system
        return total

    def round_trip_ms(self, calls: int = 200) -> float:
        """Median time of one sequential GET over a kept-alive connection, from this process."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5.0)
        samples: list[float] = []
        try:
            for n in range(calls):
                start = time.perf_counter()
                connection.request("GET", f"/v1/customers/C{n:06d}")
                connection.getresponse().read()
                samples.append((time.perf_counter() - start) * 1000)
        finally:
            connection.close()
        samples.sort()
        return samples[len(samples) // 2]

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _serve(port: int, latency_ms: float) -> None:
    from aiohttp import web

    from sandbox.server import build_app

    runner = web.AppRunner(build_app(latency_ms=latency_ms), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    streams.runtime.run(_serve(args.port, args.latency_ms))


if __name__ == "__main__":
    main()
