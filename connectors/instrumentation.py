"""The one hook through which a runtime instruments every HTTP attempt of every connector.

    from connectors.instrumentation import set_instrumentation
    set_instrumentation(my_tracing)        # streams.telemetry installs OpenTelemetry's

Each attempt runs inside ``instrumentation().attempt(connector, method, url, route=, attempt=)``,
a context manager that yields an ``AttemptTrace``: the connector lets it add headers to the
request (``traceparent``) and tells it the answer's status. An exception leaving the block is
the attempt's failure. Without an installed instrumentation nothing is recorded and nothing
is added. Metrics need no hook: they come from the connectors' observers (call outcomes,
breaker transitions, limiter waits, cache lookups), which whoever builds a connector adds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import Protocol


class AttemptTrace(Protocol):
    """What the connector tells the instrumentation about one attempt."""

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add the headers that carry the trace to the API (the request's own stay)."""
        ...

    def status(self, code: int) -> None:
        """The HTTP status of the answer (or of the error that carried one)."""
        ...


class Instrumentation(Protocol):
    def attempt(self, connector: str, method: str, url: str, *, route: str | None,
                attempt: int) -> AbstractContextManager[AttemptTrace]: ...


class _Nothing:
    def inject(self, headers: MutableMapping[str, str]) -> None:
        pass

    def status(self, code: int) -> None:
        pass

    @contextlib.contextmanager
    def attempt(self, connector: str, method: str, url: str, *, route: str | None,
                attempt: int) -> Iterator[AttemptTrace]:
        yield self


_NOTHING = _Nothing()
_current: Instrumentation = _NOTHING


def instrumentation() -> Instrumentation:
    """The installed instrumentation (a no-op one until something is installed)."""
    return _current


def set_instrumentation(hook: Instrumentation | None) -> None:
    """Install ``hook`` for every connector of this process (None: back to nothing)."""
    global _current
    _current = hook if hook is not None else _NOTHING
