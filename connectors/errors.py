"""Errors that connectors raise. ``streams.failures`` turns each into a failure kind.

A connector decides only what it knows: whether the call may succeed if made again
(``TransientError``) or never will (``PermanentError``). The pipeline decides where the
event goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.resilience.breaker import CircuitBreaker


class ConnectorError(Exception):
    """A call to an external API failed.

    ``connector`` names the connector (it goes into the ``streams.error.connector`` header);
    ``status`` is the HTTP status when there was a response.
    """

    def __init__(self, message: str, *, connector: str, status: int | None = None) -> None:
        super().__init__(message)
        self.connector = connector
        self.status = status


class TransientError(ConnectorError):
    """May succeed later: timeouts, connection errors, 5xx, 429, 408."""

    def __init__(
        self,
        message: str,
        *,
        connector: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, connector=connector, status=status)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Will fail the same way every time: other 4xx, or a response we cannot use."""


class CircuitOpenError(TransientError):
    """The connector's circuit breaker is open, so the call was not made at all.

    Transient, so it classifies like any outage. ``retry_after`` is the time until the breaker
    lets probes through again; ``breaker`` is the breaker itself, so a caller can wait for it:
    ``await exc.breaker.wait_until_closed()`` (the engine pauses partitions meanwhile).
    """

    def __init__(
        self,
        message: str,
        *,
        connector: str,
        retry_after: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(message, connector=connector, retry_after=retry_after)
        self.breaker = breaker
