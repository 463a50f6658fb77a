"""What the engine tells connectors about the event being processed, without passing it down.

The engine sets ``current_event_id`` around each event's processing; connectors derive the
``Idempotency-Key`` of state-changing calls from it, so a retried or replayed event repeats
its effects at most once where the API honours the key.
"""

from __future__ import annotations

from contextvars import ContextVar

current_event_id: ContextVar[str | None] = ContextVar("current_event_id", default=None)


def idempotency_key(operation: str) -> str | None:
    """A key stable across retries of the current event: ``<event-id>:<operation>``."""
    event_id = current_event_id.get()
    return f"{event_id}:{operation}" if event_id else None
