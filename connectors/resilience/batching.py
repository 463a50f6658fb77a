"""Micro-batching: single requests gathered into batch calls, each caller answered on its own.

    batcher = MicroBatcher("risk", send_batch, BatchSettings(max_size=50, linger=0.01))
    score = await batcher.submit(request)     # its own result, or its own exception

A batch goes out when it holds ``max_size`` items or when its first item has waited ``linger``
seconds. ``send_batch`` returns one entry per item, in order: a result, or an exception for
that item alone; if ``send_batch`` itself raises, every item of that batch gets the error.

Written by hand: the per-item routing of results and exceptions is the whole point, and no
asyncio batching library does it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from connectors.errors import PermanentError

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")

log = logging.getLogger("connectors.batching")


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """max_size: items per batch call; linger: seconds the first item waits for company;
    max_concurrent_batches: batch calls in flight at once (more wait their turn)."""

    max_size: int = 50
    linger: float = 0.01
    max_concurrent_batches: int = 4

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_concurrent_batches < 1 or self.linger < 0:
            raise ValueError("max_size and max_concurrent_batches must be >= 1, linger >= 0")


class MicroBatcher(Generic[I, R]):
    """Gathers ``submit``-ted items into calls of ``send_batch``."""

    __slots__ = ("_closed", "_pending", "_send", "_slots", "_tasks", "_timer", "batches_sent", "name", "settings")

    def __init__(
        self,
        name: str,
        send_batch: Callable[[list[I]], Awaitable[Sequence[R | BaseException]]],
        settings: BatchSettings | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or BatchSettings()
        self._send = send_batch
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_batches)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: the sizes of the last 1,000 batch calls (for tests and metrics), bounded for a long-running worker
        self.batches_sent: deque[int] = deque(maxlen=1000)

    async def submit(self, item: I) -> R:
        """Add ``item`` to the next batch and wait for its own result."""
        if self._closed:
            raise RuntimeError(f"batcher {self.name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.settings.max_size:
            self._dispatch()
        elif self._timer is None:
            self._timer = loop.call_later(self.settings.linger, self._dispatch)
        return await future

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        async with self._slots:
            live = [(item, future) for item, future in batch if not future.done()]  # callers may have gone
            if not live:
                return
            self.batches_sent.append(len(live))
            try:
                results = await self._send([item for item, _ in live])
                if len(results) != len(live):
                    raise PermanentError(
                        f"{self.name}: batch answer has {len(results)} entries for {len(live)} items",
                        connector=self.name,
                    )
            except asyncio.CancelledError:
                for _, future in live:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the batch's error
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                return
            for (_, future), result in zip(live, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def flush(self) -> None:
        """Send what is pending now and wait for every batch in flight."""
        if self._pending:
            self._dispatch()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        await self.flush()
