"""Errors that connectors raise. ``streams.failures`` turns each into a failure kind.

A connector decides only what it knows: whether the call may succeed if made again
(``TransientError``) or never will (``PermanentError``). The pipeline decides where the
event goes.
"""

from __future__ import annotations


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
