"""Resilience patterns, one module each: backoff, breaker, limiter, cache, batching."""

from connectors.resilience.backoff import RetryPolicy
from connectors.resilience.batching import BatchSettings, MicroBatcher
from connectors.resilience.breaker import BreakerSettings, BreakerState, BreakerTransition, CircuitBreaker
from connectors.resilience.cache import CacheSettings, Freshness, ResponseCache, freshness_of
from connectors.resilience.limiter import RateLimit, RateLimitSettings

__all__ = [
    "BatchSettings",
    "BreakerSettings",
    "BreakerState",
    "BreakerTransition",
    "CacheSettings",
    "CircuitBreaker",
    "Freshness",
    "MicroBatcher",
    "RateLimit",
    "RateLimitSettings",
    "ResponseCache",
    "RetryPolicy",
    "freshness_of",
]
