"""Calls to the APIs: mTLS with a test CA, host names checked, TLS 1.2 at least, OAuth2 scopes per client."""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.auth import OAuth2ClientCredentials, OAuth2Settings, TlsSettings
from connectors.customers import CustomerConnector
from connectors.errors import PermanentError, TransientError
from connectors.http import HttpSettings
from sandbox.server import SandboxConfig, SandboxServer, mtls_context
from streams.assembly import bind_pipeline
from streams.failures import FailureKind, classify
from streams.settings import Settings
from tests.security.certs import Issued, TestPki


@dataclass
class MtlsSandbox:
    server: SandboxServer
    pki: TestPki
    client: Issued
    key_password: str
    secrets: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.server.port}"

    def tls(self, **changes: object) -> TlsSettings:
        fields: dict[str, object] = {
            "ca_file": str(self.pki.ca_file), "cert_file": str(self.client.cert), "key_file": str(self.client.key),
            "key_password": SecretStr(self.key_password), **changes}
        return TlsSettings(**fields)  # type: ignore[arg-type]

    def oauth(self, client_id: str, scope: str | None) -> OAuth2ClientCredentials:
        settings = OAuth2Settings(f"{self.url}/oauth/token", client_id, SecretStr(self.secrets[client_id]), scope=scope)
        return OAuth2ClientCredentials(settings, connector="customers")

    def customers(self, *, tls: TlsSettings | None = None, auth: OAuth2ClientCredentials | None = None,
                  **http: object) -> CustomerConnector:
        return CustomerConnector(HttpSettings(base_url=self.url, tls=tls or self.tls(), max_attempts=1, **http),
                                 auth=auth if auth is not None else self.oauth("pipeline", "customers:read"))


@pytest.fixture
async def mtls_sandbox(tmp_path: Path) -> AsyncIterator[MtlsSandbox]:
    pki = TestPki.create(tmp_path / "pki", "api")
    server_cert = pki.issue("sandbox", hosts=("localhost", "127.0.0.1"))
    key_password = secrets.token_urlsafe(16)
    client = pki.issue("pipeline-client", client=True, key_password=key_password)
    client_secrets = {"pipeline": secrets.token_urlsafe(24), "reporting": secrets.token_urlsafe(24)}
    config = SandboxConfig(oauth_clients=client_secrets,
                           oauth_scopes={"pipeline": ("customers:read",), "reporting": ("risk:score",)})
    context = mtls_context(str(server_cert.cert), str(server_cert.key), client_ca_file=str(pki.ca_file))
    async with SandboxServer(config=config, ssl_context=context) as server:
        yield MtlsSandbox(server, pki, client, key_password, client_secrets)


async def test_mtls_with_oauth_scope_gets_the_customer(mtls_sandbox: MtlsSandbox) -> None:
    async with mtls_sandbox.customers() as customers:
        customer = await customers.get("C000042")
    assert customer["customer_id"] == "C000042"
    assert mtls_sandbox.server.stats.tokens_issued == 1


async def test_without_a_client_certificate_the_handshake_fails(mtls_sandbox: MtlsSandbox) -> None:
    async with mtls_sandbox.customers(tls=TlsSettings(ca_file=str(mtls_sandbox.pki.ca_file))) as customers:
        with pytest.raises(TransientError, match=r"connection failed|request failed|timed out"):
            await customers.get("C000042")
    assert mtls_sandbox.server.stats.tokens_issued == 0, "no request may get through without a certificate"


async def test_a_server_certificate_from_another_ca_is_refused(mtls_sandbox: MtlsSandbox, tmp_path: Path) -> None:
    rogue = TestPki.create(tmp_path / "rogue", "rogue")
    async with mtls_sandbox.customers(tls=mtls_sandbox.tls(ca_file=str(rogue.ca_file))) as customers:
        with pytest.raises(TransientError, match="Certificate"):
            await customers.get("C000042")


async def test_a_server_certificate_for_another_host_name_is_refused(tmp_path: Path) -> None:
    pki = TestPki.create(tmp_path / "pki", "api")
    elsewhere = pki.issue("elsewhere", hosts=("api.example.org",))  # valid, trusted, wrong name
    context = mtls_context(str(elsewhere.cert), str(elsewhere.key))
    async with SandboxServer(ssl_context=context) as server:
        settings = HttpSettings(base_url=f"https://localhost:{server.port}", max_attempts=1,
                                tls=TlsSettings(ca_file=str(pki.ca_file)))
        async with CustomerConnector(settings) as customers:
            with pytest.raises(TransientError, match="Certificate"):
                await customers.get("C000042")
        assert server.stats.customer_requests == 0


async def test_tls_older_than_1_2_is_neither_configurable_nor_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"TLS 1\.2 or later"):
        TlsSettings(minimum_version=ssl.TLSVersion.TLSv1_1)
    assert TlsSettings().ssl_context().minimum_version >= ssl.TLSVersion.TLSv1_2
    pki = TestPki.create(tmp_path / "pki", "api")
    cert = pki.issue("old", hosts=("localhost",))
    context = mtls_context(str(cert.cert), str(cert.key))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # a server stuck on 1.2 ...
    async with SandboxServer(ssl_context=context) as server:
        tls13_only = TlsSettings(ca_file=str(pki.ca_file), minimum_version=ssl.TLSVersion.TLSv1_3)
        settings = HttpSettings(base_url=f"https://localhost:{server.port}", max_attempts=1, tls=tls13_only)
        async with CustomerConnector(settings) as customers:  # ... and a client asking for 1.3: no deal
            with pytest.raises(TransientError, match="connection failed"):
                await customers.get("C000042")
        ok = HttpSettings(base_url=f"https://localhost:{server.port}", tls=TlsSettings(ca_file=str(pki.ca_file)))
        async with CustomerConnector(ok) as customers:
            assert (await customers.get("C000042"))["customer_id"] == "C000042"


async def test_a_client_asking_for_a_scope_it_may_not_have_gets_a_clear_permanent_error(
    mtls_sandbox: MtlsSandbox,
) -> None:
    auth = mtls_sandbox.oauth("reporting", "customers:read")
    async with mtls_sandbox.customers(auth=auth) as customers:
        with pytest.raises(PermanentError) as caught:
            await customers.get("C000042")
    message = str(caught.value)
    assert caught.value.status == 400 and "invalid_scope" in message and "customers:read" in message
    assert classify(caught.value).kind is FailureKind.PERMANENT
    assert mtls_sandbox.secrets["reporting"] not in message


async def test_a_token_without_the_scope_is_refused_by_the_api_as_permanent(mtls_sandbox: MtlsSandbox) -> None:
    auth = mtls_sandbox.oauth("reporting", None)  # granted its own scopes only: risk:score
    async with mtls_sandbox.customers(auth=auth) as customers:
        with pytest.raises(PermanentError) as caught:
            await customers.get("C000042")
    assert caught.value.status == 403 and classify(caught.value).kind is FailureKind.PERMANENT


async def test_the_orders_pipeline_uses_oauth_and_mtls_from_its_settings(
    mtls_sandbox: MtlsSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipelines import orders

    client = mtls_sandbox.client
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(mtls_sandbox.secrets["pipeline"] + "\n")
    for name, value in {"URL": mtls_sandbox.url, "RETRIES": "1", "CLIENT_ID": "pipeline",
                        "CLIENT_SECRET_FILE": str(secret_file), "SCOPE": "customers:read",
                        "CA_FILE": mtls_sandbox.pki.ca_file, "CERT_FILE": client.cert, "KEY_FILE": client.key,
                        "KEY_PASSWORD": mtls_sandbox.key_password}.items():
        monkeypatch.setenv(f"STREAMS_API_CUSTOMERS_{name}", str(value))
    bind_pipeline(orders.pipeline, Settings())
    await orders.customers.start()
    try:
        order = {
            "event_id": "evt-1", "order_id": "ord-1", "customer_id": "C000007", "placed_at": int(time.time() * 1000),
            "currency": "EUR", "amount_cents": 100, "channel": "web", "shipping_country": "DE",
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100}], "coupon_code": None}
        enriched = {"customer": await orders.customer(order)}
    finally:
        await orders.customers.close()
    assert enriched["customer"]["customer_id"] == "C000007"
    assert mtls_sandbox.server.stats.tokens_issued == 1
