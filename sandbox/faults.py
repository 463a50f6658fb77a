"""Fault injection per endpoint: latency, errors by status, outages, slow, malformed or oversized bodies.

A spec is a JSON object, set at start (``SandboxConfig.faults``, ``python -m sandbox --faults``)
and replaced at runtime with ``PUT /admin/faults/{endpoint}``; every key is optional:

    {
      "latency": {"distribution": "lognormal", "median_ms": 20, "sigma": 0.5, "max_ms": 500},
      "errors": {"503": 0.1, "500": 0.02, "429": 0.05},
      "retry_after": 1, "retry_after_format": "seconds",
      "outages": [{"start_s": 0, "duration_s": 5, "status": 503}],
      "slow_body": {"rate": 0.1, "chunk_bytes": 16, "interval_ms": 50},
      "malformed_rate": 0.05,
      "oversized": {"rate": 0.01, "bytes": 2000000, "chunked": false}
    }

Latency distributions: ``fixed`` (ms), ``uniform`` (min_ms, max_ms), ``normal`` (mean_ms,
stddev_ms), ``exponential`` (mean_ms), ``lognormal`` (median_ms, sigma); ``max_ms`` caps any.
Outage times are relative to when the spec is set; ``duration_s`` null means until changed.
``retry_after`` is sent with injected 429 and 503 answers (``seconds`` or an HTTP ``date``).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Literal

from aiohttp import web

_SPEC_KEYS = frozenset({
    "latency", "errors", "retry_after", "retry_after_format", "outages", "slow_body", "malformed_rate", "oversized",
})
_DISTRIBUTIONS = frozenset({"fixed", "uniform", "normal", "exponential", "lognormal"})


@dataclass(frozen=True, slots=True)
class Latency:
    distribution: str
    params: dict[str, float]

    def draw(self, rng: random.Random) -> float:
        """Seconds to wait."""
        p = self.params
        if self.distribution == "fixed":
            ms = p.get("ms", 0.0)
        elif self.distribution == "uniform":
            ms = rng.uniform(p.get("min_ms", 0.0), p.get("max_ms", 0.0))
        elif self.distribution == "normal":
            ms = rng.gauss(p.get("mean_ms", 0.0), p.get("stddev_ms", 0.0))
        elif self.distribution == "exponential":
            mean = p.get("mean_ms", 0.0)
            ms = rng.expovariate(1 / mean) if mean > 0 else 0.0
        else:
            median = p.get("median_ms", 0.0)
            ms = rng.lognormvariate(math.log(median), p.get("sigma", 0.0)) if median > 0 else 0.0
        if "max_ms" in p:
            ms = min(ms, p["max_ms"])
        return max(0.0, ms) / 1000


@dataclass(frozen=True, slots=True)
class Outage:
    start: float  # time.monotonic()
    end: float | None
    status: int

    def active(self, now: float) -> bool:
        return self.start <= now and (self.end is None or now < self.end)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One endpoint's faults, parsed and validated; ``source`` is the JSON it came from."""

    source: dict[str, Any]
    latency: Latency | None = None
    errors: tuple[tuple[int, float], ...] = ()
    retry_after: float | None = None
    retry_after_format: Literal["seconds", "date"] = "seconds"
    outages: tuple[Outage, ...] = ()
    slow_rate: float = 0.0
    slow_chunk_bytes: int = 16
    slow_interval: float = 0.05
    malformed_rate: float = 0.0
    oversized_rate: float = 0.0
    oversized_bytes: int = 2_000_000
    oversized_chunked: bool = False

    @classmethod
    def parse(cls, data: Any, now: float | None = None) -> FaultSpec:
        """Validate a JSON spec; ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a fault spec is a JSON object")
        unknown = set(data) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        now = time.monotonic() if now is None else now
        fields: dict[str, Any] = {"source": data}
        if (latency := data.get("latency")) is not None:
            fields["latency"] = _latency(latency)
        if (errors := data.get("errors")) is not None:
            if not isinstance(errors, dict):
                raise ValueError("errors maps a status to a probability")
            pairs = tuple((_status(k), _probability(v, f"errors[{k}]")) for k, v in errors.items())
            if sum(p for _, p in pairs) > 1:
                raise ValueError("error probabilities add up to more than 1")
            fields["errors"] = pairs
        if (retry_after := data.get("retry_after")) is not None:
            fields["retry_after"] = _non_negative(retry_after, "retry_after")
        if (fmt := data.get("retry_after_format")) is not None:
            if fmt not in ("seconds", "date"):
                raise ValueError("retry_after_format is 'seconds' or 'date'")
            fields["retry_after_format"] = fmt
        if (outages := data.get("outages")) is not None:
            if not isinstance(outages, list):
                raise ValueError("outages is a list")
            fields["outages"] = tuple(_outage(o, now) for o in outages)
        if (slow := data.get("slow_body")) is not None:
            if not isinstance(slow, dict):
                raise ValueError("slow_body is an object")
            fields["slow_rate"] = _probability(slow.get("rate", 1.0), "slow_body.rate")
            chunk = _non_negative(slow.get("chunk_bytes", 16), "slow_body.chunk_bytes")
            fields["slow_chunk_bytes"] = max(1, int(chunk))
            fields["slow_interval"] = _non_negative(slow.get("interval_ms", 50), "slow_body.interval_ms") / 1000
        if (malformed := data.get("malformed_rate")) is not None:
            fields["malformed_rate"] = _probability(malformed, "malformed_rate")
        if (oversized := data.get("oversized")) is not None:
            if not isinstance(oversized, dict):
                raise ValueError("oversized is an object")
            fields["oversized_rate"] = _probability(oversized.get("rate", 1.0), "oversized.rate")
            fields["oversized_bytes"] = int(_non_negative(oversized.get("bytes", 2_000_000), "oversized.bytes"))
            fields["oversized_chunked"] = bool(oversized.get("chunked", False))
        return cls(**fields)


def _latency(data: Any) -> Latency:
    if not isinstance(data, dict) or data.get("distribution", "fixed") not in _DISTRIBUTIONS:
        raise ValueError(f"latency needs a distribution among {sorted(_DISTRIBUTIONS)}")
    params = {k: _non_negative(v, f"latency.{k}") for k, v in data.items() if k != "distribution"}
    return Latency(str(data.get("distribution", "fixed")), params)


def _outage(data: Any, now: float) -> Outage:
    if not isinstance(data, dict):
        raise ValueError("an outage is an object")
    start = now + _non_negative(data.get("start_s", 0), "outage start_s")
    duration = data.get("duration_s")
    end = None if duration is None else start + _non_negative(duration, "outage duration_s")
    return Outage(start, end, _status(data.get("status", 503)))


def _status(value: Any) -> int:
    try:
        status = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not an HTTP status") from None
    if not 400 <= status <= 599:
        raise ValueError(f"injected status {status} must be 4xx or 5xx")
    return status


def _probability(value: Any, name: str) -> float:
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability between 0 and 1")
    return float(value)


def _non_negative(value: Any, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)


def retry_after_header(seconds: float, fmt: str) -> str:
    """``Retry-After`` as whole delta-seconds (rounded up) or as an HTTP date (rounded up)."""
    if fmt == "date":
        return formatdate(math.ceil(time.time() + seconds), usegmt=True)
    return str(max(0, math.ceil(seconds)))


def error_response(status: int, message: str, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


class FaultInjector:
    """Holds the specs per endpoint and applies them to requests and responses."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._specs: dict[str, FaultSpec] = {}

    def set(self, endpoint: str, spec: FaultSpec) -> None:
        self._specs[endpoint] = spec

    def clear(self, endpoint: str | None = None) -> None:
        if endpoint is None:
            self._specs.clear()
        else:
            self._specs.pop(endpoint, None)

    def describe(self) -> dict[str, Any]:
        return {endpoint: spec.source for endpoint, spec in self._specs.items()}

    async def before(self, endpoint: str) -> web.Response | None:
        """An outage or injected error answer (after the injected latency), or None to go on."""
        spec = self._specs.get(endpoint)
        if spec is None:
            return None
        now = time.monotonic()
        for outage in spec.outages:
            if outage.active(now):
                return self._error(spec, outage.status, "outage")
        if spec.latency is not None:
            await asyncio.sleep(spec.latency.draw(self._rng))
        draw = self._rng.random()
        for status, probability in spec.errors:
            if draw < probability:
                return self._error(spec, status, "injected error")
            draw -= probability
        return None

    def _error(self, spec: FaultSpec, status: int, message: str) -> web.Response:
        retry_after = None
        if spec.retry_after is not None and status in (429, 503):
            retry_after = retry_after_header(spec.retry_after, spec.retry_after_format)
        return error_response(status, message, retry_after)

    async def deliver(self, endpoint: str, request: web.Request, response: web.Response) -> web.StreamResponse:
        """The answer as it goes out: possibly oversized, malformed or trickled."""
        spec = self._specs.get(endpoint)
        if spec is None or response.status >= 300 or not isinstance(response.body, bytes):
            return response
        body = response.body
        chunked = False
        if spec.oversized_rate and self._rng.random() < spec.oversized_rate:
            body = json.dumps({"padding": "x" * spec.oversized_bytes}).encode()
            chunked = spec.oversized_chunked
        elif spec.malformed_rate and self._rng.random() < spec.malformed_rate:
            body = body[: len(body) // 2] + b"\x00}{"
        slow = bool(spec.slow_rate) and self._rng.random() < spec.slow_rate
        if not slow and not chunked:
            if body is response.body:
                return response
            return web.Response(body=body, status=response.status, headers=_headers_of(response))
        stream = web.StreamResponse(status=response.status, headers=_headers_of(response))
        if chunked:
            stream.enable_chunked_encoding()
        else:
            stream.content_length = len(body)
        await stream.prepare(request)
        step = spec.slow_chunk_bytes if slow else 64 * 1024
        for offset in range(0, len(body), step):
            await stream.write(body[offset: offset + step])
            if slow:
                await asyncio.sleep(spec.slow_interval)
        await stream.write_eof()
        return stream


def _headers_of(response: web.Response) -> dict[str, str]:
    skip = {"content-length", "transfer-encoding"}
    return {k: v for k, v in response.headers.items() if k.lower() not in skip}
