"""Consumer contract: what the customer connector needs from ``GET /v1/customers/{id}``.

Each test declares one interaction, runs the real ``CustomerConnector`` against Pact's mock
server, and checks what the connector made of the answer. The module writes
``pacts/orders-enricher-customers-api.json``; ``test_pact_sandbox_provider.py`` verifies the
sandbox API against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pact import Pact, match

from connectors.customers import CustomerConnector
from connectors.errors import PermanentError
from connectors.http import HttpSettings
from tests.contract.pacts import CUSTOMERS_API, PIPELINE, pact_file

KNOWN = "C000042"
UNKNOWN = "NOBODY"


@pytest.fixture(scope="module")
def pact_path() -> Path:
    """The pact file, emptied once per module: the tests below write it anew, interaction by interaction."""
    path = pact_file(PIPELINE, CUSTOMERS_API)
    path.unlink(missing_ok=True)
    return path


@pytest.fixture
def pact(pact_path: Path) -> Iterator[Pact]:
    """A pact for one interaction (a pact that has served a mock server takes no more), merged into the file."""
    pact = Pact(PIPELINE, CUSTOMERS_API).with_specification("V4")
    yield pact
    pact.write_file(pact_path.parent)


def _connector(url: str) -> CustomerConnector:
    # One attempt: a contract test shows what one exchange means, not the retry policy.
    return CustomerConnector(HttpSettings(base_url=url, max_attempts=1))


async def test_an_existing_customer_becomes_the_customer_record(pact: Pact) -> None:
    (
        pact.upon_receiving("a request for an existing customer")
        .given("customer C000042 exists")
        .with_request("GET", f"/v1/customers/{KNOWN}")
        .with_header("Accept", match.regex("application/json", regex=r".*application/json.*"))
        .will_respond_with(200)
        .with_body(
            {
                "customer_id": KNOWN,  # exact: the connector refuses an answer about someone else
                "name": match.str("Ada Lovelace"),
                "tier": match.regex("gold", regex=r"^(bronze|silver|gold|platinum)$"),
                "country": match.regex("GB", regex=r"^[A-Z]{2}$"),
                "since": match.date("2019-03-04"),
            },
            content_type="application/json",
        )
    )
    with pact.serve(addr="127.0.0.1") as server:
        async with _connector(str(server.url)) as customers:
            customer = await customers.get(KNOWN)

    assert customer == {"customer_id": KNOWN, "name": "Ada Lovelace", "tier": "gold", "country": "GB",
                        "since": "2019-03-04"}


async def test_an_unknown_customer_is_a_permanent_failure(pact: Pact) -> None:
    (
        pact.upon_receiving("a request for a customer that does not exist")
        .given("no customer has the id NOBODY")
        .with_request("GET", f"/v1/customers/{UNKNOWN}")
        .will_respond_with(404)
    )
    with pact.serve(addr="127.0.0.1") as server:
        async with _connector(str(server.url)) as customers:
            with pytest.raises(PermanentError) as caught:
                await customers.get(UNKNOWN)

    assert caught.value.status == 404
    assert caught.value.connector == "customers"
