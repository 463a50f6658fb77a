"""Provider verification: the sandbox API, started for real on loopback, against every HTTP pact in ``pacts/``.

Pact replays each interaction of a pact file against the running sandbox and compares the
answers with what the consumer test recorded. A provider state names data the interaction
assumes; the sandbox derives every customer from its id, so a state handler checks that the
sandbox's data really is in that state rather than arranging it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pact import Verifier

from sandbox.customers import customer_for
from tests.conftest import SandboxThread
from tests.contract.pacts import CUSTOMERS_API, PACT_DIR


def _customer_exists(customer_id: str) -> Callable[..., None]:
    def check(**_: Any) -> None:
        assert customer_for(customer_id) is not None, f"the sandbox has no customer {customer_id}"
    return check


def _no_customer(customer_id: str) -> Callable[..., None]:
    def check(**_: Any) -> None:
        assert customer_for(customer_id) is None, f"the sandbox has a customer {customer_id}"
    return check


# provider name → its provider states. One entry per API the sandbox stands in for.
SANDBOX_PROVIDER_STATES: dict[str, dict[str, Callable[..., None]]] = {
    CUSTOMERS_API: {
        "customer C000042 exists": _customer_exists("C000042"),
        "no customer has the id NOBODY": _no_customer("NOBODY"),
    },
}


def _http_pacts() -> list[Path]:
    """The pact files of providers the sandbox serves."""
    return sorted(p for p in PACT_DIR.glob("*.json")
                  if json.loads(p.read_text())["provider"]["name"] in SANDBOX_PROVIDER_STATES)


def test_there_is_a_pact_for_every_api_the_sandbox_stands_in_for() -> None:
    providers = {json.loads(p.read_text())["provider"]["name"] for p in _http_pacts()}
    assert providers == set(SANDBOX_PROVIDER_STATES)


@pytest.mark.parametrize("pact_path", _http_pacts(), ids=lambda p: p.stem)
def test_the_sandbox_honours_the_pact(pact_path: Path, sandbox: SandboxThread) -> None:
    provider = json.loads(pact_path.read_text())["provider"]["name"]
    verifier = (
        Verifier(provider, host="127.0.0.1")
        .add_transport(url=sandbox.url)
        .add_source(pact_path)
        .state_handler(SANDBOX_PROVIDER_STATES[provider], teardown=False)
        .set_error_on_empty_pact(enabled=True)
    )
    verifier.verify()
    results = verifier.results
    assert results.get("result") is True, verifier.output(strip_ansi=True)
