"""The API client layer: an HTTP core with timeouts, retries and typed errors, resilience
patterns (breaker, rate limit, cache, batching), auth, and one module per API."""

from connectors.auth import (
    ApiKeyAuth,
    ApiKeySettings,
    Auth,
    OAuth2ClientCredentials,
    OAuth2Settings,
    TlsSettings,
)
from connectors.catalog import CatalogConnector, CatalogPage
from connectors.customers import CustomerConnector
from connectors.errors import CircuitOpenError, ConnectorError, PermanentError, TransientError
from connectors.fx import FxRates, FxRatesConnector
from connectors.http import HttpConnector, HttpSettings, JsonResponse
from connectors.resilience import (
    BatchSettings,
    BreakerSettings,
    BreakerState,
    BreakerTransition,
    CacheSettings,
    CircuitBreaker,
    RateLimit,
    RateLimitSettings,
)
from connectors.results import ConnectorResult, Source
from connectors.risk import RiskRequest, RiskScore, RiskScoreConnector

__all__ = [
    "ApiKeyAuth",
    "ApiKeySettings",
    "Auth",
    "BatchSettings",
    "BreakerSettings",
    "BreakerState",
    "BreakerTransition",
    "CacheSettings",
    "CatalogConnector",
    "CatalogPage",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConnectorError",
    "ConnectorResult",
    "CustomerConnector",
    "FxRates",
    "FxRatesConnector",
    "HttpConnector",
    "HttpSettings",
    "JsonResponse",
    "OAuth2ClientCredentials",
    "OAuth2Settings",
    "PermanentError",
    "RateLimit",
    "RateLimitSettings",
    "RiskRequest",
    "RiskScore",
    "RiskScoreConnector",
    "Source",
    "TlsSettings",
    "TransientError",
]
