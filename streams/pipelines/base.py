"""What the engine needs from a pipeline."""

from __future__ import annotations

from typing import Any, Protocol


class Pipeline(Protocol):
    """Enriches one decoded input event into one output record.

    ``process`` raises on failure; ``streams.failures.classify`` decides where the event goes.
    """

    input_subject: str
    output_subject: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def process(self, event: dict[str, Any]) -> dict[str, Any]: ...

    def on_assignment(self, owned_partitions: int, total_partitions: int) -> None:
        """The worker now owns this many of the input's partitions (rate-limit shares follow)."""
        ...
