"""Enrichment pipelines on Apache Kafka: the public API.

    from streams import Api, Batch, Pipeline, Permanent

Everything a pipeline module needs is here; every other module of the package is private and
may change. docs/pipelines.md is the reference.

The names load on first use (PEP 562), so that importing a submodule, as the connector library
does for telemetry, does not import the whole runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.api import Api, ApiKey, Breaker, Cache, CircuitOpen, OAuth2, Permanent, Tls, Transient
    from streams.failures import ValidationError
    from streams.pipeline import RECORD_KEY, Batch, Outcome, Pipeline, PipelineError
    from streams.table import Table

__version__ = "0.1.0"

_HOMES = {
    "Api": "streams.api", "ApiKey": "streams.api", "Breaker": "streams.api", "Cache": "streams.api",
    "CircuitOpen": "streams.api", "OAuth2": "streams.api", "Permanent": "streams.api", "Tls": "streams.api",
    "Transient": "streams.api", "ValidationError": "streams.failures", "RECORD_KEY": "streams.pipeline",
    "Batch": "streams.pipeline", "Outcome": "streams.pipeline", "Pipeline": "streams.pipeline",
    "PipelineError": "streams.pipeline", "Table": "streams.table",
}

__all__ = [
    "RECORD_KEY", "Api", "ApiKey", "Batch", "Breaker", "Cache", "CircuitOpen", "OAuth2", "Outcome", "Permanent",
    "Pipeline", "PipelineError", "Table", "Tls", "Transient", "ValidationError",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
