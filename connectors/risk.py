"""The risk-score API: one order scored by ``POST /v1/risk-scores``, many by ``/v1/risk-scores/batch``.

    async with RiskScoreConnector(HttpSettings(base_url=url), rate_limit=RateLimitSettings(rate=50)) as risk:
        result = await risk.score_batched(RiskRequest("C000042", 1999, "EUR"))
        result.value.score, result.degraded

The API is rate-limited (429 + Retry-After), so the connector has a rate limit. Single requests
submitted with ``score_batched`` are gathered into batch calls; each caller gets its own score
or its own error. With a ``fallback`` the connector is optional: a transient failure (the
breaker open included) returns the fallback score, marked degraded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from connectors.auth import Auth
from connectors.base import ApiConnector
from connectors.context import idempotency_key as event_idempotency_key
from connectors.errors import ConnectorError, PermanentError, TransientError
from connectors.http import HttpSettings
from connectors.resilience.batching import BatchSettings, MicroBatcher
from connectors.resilience.breaker import BreakerSettings
from connectors.resilience.limiter import RateLimitSettings
from connectors.results import ConnectorResult, with_fallback

_BANDS = frozenset({"low", "medium", "high"})


@dataclass(frozen=True, slots=True)
class RiskRequest:
    """What the API scores: who pays how much, in which currency (ISO 4217)."""

    customer_id: str
    amount_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class RiskScore:
    """0 (safe) to 100 (fraud), and its band."""

    score: int
    band: str


class RiskScoreConnector(ApiConnector):
    """Scores orders, singly or in micro-batches, within the API's rate limit."""

    name = "risk"

    def __init__(
        self,
        settings: HttpSettings,
        *,
        auth: Auth | None = None,
        breaker: BreakerSettings | None = None,
        rate_limit: RateLimitSettings | None = None,
        batch: BatchSettings | None = None,
        fallback: RiskScore | None = None,
    ) -> None:
        super().__init__(settings, auth=auth, breaker=breaker, rate_limit=rate_limit)
        self.fallback = fallback
        self.batcher: MicroBatcher[RiskRequest, RiskScore] = MicroBatcher(self.name, self.score_many, batch)
        self.breaker.set_probe(
            lambda: self.http.probe("/v1/risk-scores/health")
        )

    async def close(self) -> None:
        await self.batcher.close()
        await super().close()

    async def score(self, request: RiskRequest, *, idempotency_key: str | None = None) -> ConnectorResult[RiskScore]:
        """Score one order with the single endpoint.

        The ``Idempotency-Key`` is ``idempotency_key``, else derived from the event being
        processed (``connectors.context``), so the API can tell a replayed event's call.
        """
        idempotency_key = idempotency_key or event_idempotency_key("risk-score")
        return await with_fallback(self._score(request, idempotency_key), self.fallback, self.name)

    async def score_batched(self, request: RiskRequest) -> ConnectorResult[RiskScore]:
        """Score one order as part of the next micro-batch."""
        return await with_fallback(self._batched(request), self.fallback, self.name)

    async def score_many(self, requests: Sequence[RiskRequest]) -> list[RiskScore | ConnectorError]:
        """Score up to a batch of orders in one call; each entry a score or that item's own error.

        Raises when the batch call as a whole fails (every item failed the same way).
        """
        body = {"items": [{"id": str(i), **asdict(r)} for i, r in enumerate(requests)]}
        answer = await self.http.post_json("/v1/risk-scores/batch", body, retry=True)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise PermanentError(f"{self.name}: batch answer has no results list", connector=self.name)
        by_id = {entry.get("id"): entry for entry in results if isinstance(entry, dict)}
        return [self._item(by_id.get(str(i))) for i in range(len(requests))]

    async def _score(self, request: RiskRequest, idempotency_key: str | None) -> ConnectorResult[RiskScore]:
        answer = await self.http.post_json(
            "/v1/risk-scores", asdict(request), idempotency_key=idempotency_key, retry=True
        )
        return ConnectorResult(self._to_score(answer), connector=self.name)

    async def _batched(self, request: RiskRequest) -> ConnectorResult[RiskScore]:
        return ConnectorResult(await self.batcher.submit(request), connector=self.name)

    def _item(self, entry: Any) -> RiskScore | ConnectorError:
        if entry is None:
            return PermanentError(f"{self.name}: batch answer lacks an item", connector=self.name)
        error = entry.get("error")
        if error is None:
            try:
                return self._to_score(entry)
            except PermanentError as exc:
                return exc
        status = error.get("status") if isinstance(error, dict) else None
        status = status if isinstance(status, int) else None
        message = f"{self.name}: batch item failed with status {status}"
        if status is not None and (status >= 500 or status in (408, 429)):
            return TransientError(message, connector=self.name, status=status)
        return PermanentError(message, connector=self.name, status=status)

    def _to_score(self, body: Any) -> RiskScore:
        score = body.get("score") if isinstance(body, dict) else None
        band = body.get("band") if isinstance(body, dict) else None
        if not isinstance(score, int) or not 0 <= score <= 100 or band not in _BANDS:
            raise PermanentError(f"{self.name}: answer has no valid score and band", connector=self.name)
        return RiskScore(score, str(band))
