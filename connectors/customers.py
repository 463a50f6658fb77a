"""The customer API: ``GET /v1/customers/{id}`` returns who placed an order (behind OAuth2)."""

from __future__ import annotations

from typing import Any

from connectors.auth import Auth
from connectors.base import ApiConnector
from connectors.errors import PermanentError
from connectors.http import HttpSettings
from connectors.resilience.breaker import BreakerSettings
from connectors.resilience.limiter import RateLimitSettings

_FIELDS = ("customer_id", "name", "tier", "country", "since")
_MAX_FIELD_LENGTH = 256


class CustomerConnector(ApiConnector):
    """Looks customers up by id and returns them as the ``Customer`` record of EnrichedOrder.

        async with CustomerConnector(HttpSettings(base_url=url), auth=oauth) as customers:
            customer = await customers.get("C000042")

    A required connector: failures raise. Its breaker probes by looking up
    ``probe_customer_id``, so it recovers by itself while the engine holds traffic back.
    """

    name = "customers"

    def __init__(
        self,
        settings: HttpSettings,
        *,
        auth: Auth | None = None,
        breaker: BreakerSettings | None = None,
        rate_limit: RateLimitSettings | None = None,
        probe_customer_id: str = "C000001",
    ) -> None:
        super().__init__(settings, auth=auth, breaker=breaker, rate_limit=rate_limit)
        self.breaker.set_probe(lambda: self.http.probe("/v1/customers/{id}", id=probe_customer_id))

    async def get(self, customer_id: str) -> dict[str, str]:
        body = await self.http.get_json("/v1/customers/{id}", id=customer_id)
        return self._to_record(body, customer_id)

    def _to_record(self, body: Any, customer_id: str) -> dict[str, str]:
        """Validate the response: every field a short string, and the id the one we asked for."""
        if not isinstance(body, dict):
            raise PermanentError(f"customers: response is {type(body).__name__}, expected an object",
                                 connector=self.name)
        record: dict[str, str] = {}
        for field in _FIELDS:
            value = body.get(field)
            if not isinstance(value, str) or len(value) > _MAX_FIELD_LENGTH:
                raise PermanentError(f"customers: field {field!r} missing or not a short string",
                                     connector=self.name)
            record[field] = value
        if record["customer_id"] != customer_id:
            raise PermanentError("customers: response is for a different customer", connector=self.name)
        return record
