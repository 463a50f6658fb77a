"""The customer API: ``GET /v1/customers/{id}`` returns who placed an order."""

from __future__ import annotations

from typing import Any

from connectors.errors import PermanentError
from connectors.http import HttpConnector, HttpSettings

_FIELDS = ("customer_id", "name", "tier", "country", "since")
_MAX_FIELD_LENGTH = 256


class CustomerConnector:
    """Looks customers up by id and returns them as the ``Customer`` record of EnrichedOrder.

        async with CustomerConnector(HttpSettings(base_url=url)) as customers:
            customer = await customers.get("C000042")
    """

    name = "customers"

    def __init__(self, settings: HttpSettings) -> None:
        self._http = HttpConnector(self.name, settings)

    async def __aenter__(self) -> CustomerConnector:
        await self._http.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.close()

    async def start(self) -> None:
        await self._http.start()

    async def close(self) -> None:
        await self._http.close()

    async def get(self, customer_id: str) -> dict[str, str]:
        body = await self._http.get_json("/v1/customers/{id}", id=customer_id)
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
