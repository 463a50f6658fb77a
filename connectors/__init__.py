"""The API client layer: an HTTP core with timeouts, retries and typed errors, and one module per API."""

from connectors.customers import CustomerConnector
from connectors.errors import ConnectorError, PermanentError, TransientError
from connectors.http import HttpConnector, HttpSettings

__all__ = [
    "ConnectorError",
    "CustomerConnector",
    "HttpConnector",
    "HttpSettings",
    "PermanentError",
    "TransientError",
]
