"""The product catalog API: ``GET /v1/products?limit=&cursor=``, paginated by cursor and Link header.

    async with CatalogConnector(HttpSettings(base_url=url)) as catalog:
        async for page in catalog.pages(limit=100):
            for product in page.items: ...
            save(page.next_cursor)           # None after the last page

The next page is found through the ``Link: <...>; rel="next"`` header when there is one (its
URL is checked against the allowed hosts like any other), else through ``next_cursor`` in the
body. Either way the position is a cursor string, which is what a checkpoint stores.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from connectors.base import ApiConnector
from connectors.errors import PermanentError
from connectors.http import JsonResponse

_LINK = re.compile(r'<(?P<url>[^>]*)>\s*(?P<params>(?:;\s*[^;,]*)*)')
_REL_NEXT = re.compile(r'rel\s*=\s*"?(?:[^"]*\s)?next(?:\s[^"]*)?"?', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """One page of products, and the cursor of the page after it (None: this was the last)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


class CatalogConnector(ApiConnector):
    """Pages through the product catalog."""

    name = "catalog"

    async def page(self, cursor: str | None = None, limit: int = 100) -> CatalogPage:
        query = {"limit": str(limit)}
        if cursor is not None:
            query["cursor"] = cursor
        return self._to_page(await self.http.get("/v1/products", query=query))

    async def pages(self, cursor: str | None = None, limit: int = 100) -> AsyncIterator[CatalogPage]:
        """Every page from ``cursor`` (None: the first page) to the last."""
        while True:
            page = await self.page(cursor, limit)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _to_page(self, response: JsonResponse) -> CatalogPage:
        body = response.data
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise PermanentError(f"{self.name}: page has no list of items", connector=self.name)
        next_url = _next_link(response.headers.get("Link", ""))
        if next_url is not None:
            url = self.http.check_url(urljoin(response.url, next_url))
            cursors = parse_qs(urlsplit(url).query).get("cursor")
            if not cursors:
                raise PermanentError(f"{self.name}: next link carries no cursor", connector=self.name)
            return CatalogPage(items, cursors[0])
        next_cursor = body.get("next_cursor")
        if next_cursor is not None and not isinstance(next_cursor, str):
            raise PermanentError(f"{self.name}: next_cursor is not a string", connector=self.name)
        return CatalogPage(items, next_cursor or None)


def _next_link(header: str) -> str | None:
    """The target of the ``rel="next"`` link in a Link header (RFC 8288), if any."""
    for match in _LINK.finditer(header):
        if _REL_NEXT.search(match.group("params")):
            return match.group("url")
    return None
