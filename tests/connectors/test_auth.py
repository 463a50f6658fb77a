"""Auth against the real sandbox: OAuth2 client credentials, API keys, mTLS; secrets never leak."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from connectors import (
    ApiKeyAuth,
    ApiKeySettings,
    ConnectorError,
    CustomerConnector,
    HttpSettings,
    OAuth2ClientCredentials,
    OAuth2Settings,
    PermanentError,
    RiskRequest,
    RiskScoreConnector,
    TlsSettings,
)
from sandbox.customers import customer_for
from sandbox.server import SandboxConfig, SandboxServer, mtls_context
from tests.connectors.conftest import FakeClock, SandboxFactory

CLIENT_ID = "orders-enricher"
SECRET = "s3cret-8f2c1d-never-log-me"
OAUTH = SandboxConfig(oauth_clients={CLIENT_ID: SECRET}, token_ttl=3600)


def oauth_for(api: SandboxServer, clock: FakeClock | None = None, secret: str = SECRET) -> OAuth2ClientCredentials:
    settings = OAuth2Settings(f"{api.url}/oauth/token", CLIENT_ID, SecretStr(secret), refresh_margin=30)
    if clock is None:
        return OAuth2ClientCredentials(settings, connector="customers")
    return OAuth2ClientCredentials(settings, connector="customers", clock=clock)


async def test_the_customer_api_refuses_calls_without_a_token(start_sandbox: SandboxFactory) -> None:
    async with start_sandbox(OAUTH) as api, CustomerConnector(HttpSettings(base_url=api.url)) as customers:
        with pytest.raises(PermanentError) as caught:
            await customers.get("C000042")
    assert caught.value.status == 401


async def test_a_hundred_concurrent_calls_with_an_expired_token_make_one_token_request(
    start_sandbox: SandboxFactory, clock: FakeClock
) -> None:
    async with start_sandbox(OAUTH) as api:
        oauth = oauth_for(api, clock)
        async with CustomerConnector(HttpSettings(base_url=api.url), auth=oauth) as customers:
            await customers.get("C000001")
            clock.advance(3600 - 30)  # the token is now inside its refresh margin: expired for the client
            assert not oauth.token_valid
            ids = [f"C{i:06d}" for i in range(100)]
            results = await asyncio.gather(*(customers.get(i) for i in ids))
    assert results == [customer_for(i) for i in ids]
    assert oauth.token_requests == 2 and api.stats.tokens_issued == 2


async def test_a_401_refreshes_the_token_once_and_the_call_succeeds(start_sandbox: SandboxFactory) -> None:
    async with start_sandbox(OAUTH) as api:
        oauth = oauth_for(api)
        async with CustomerConnector(HttpSettings(base_url=api.url), auth=oauth) as customers:
            await customers.get("C000001")
            async with (  # the API forgets every token (a key rotation, say) while the client still holds one
                aiohttp.ClientSession() as admin,
                admin.post(f"{api.url}/admin/tokens/revoke") as response,
            ):
                assert response.status == 204
            assert oauth.token_valid
            customer = await customers.get("C000042")
            assert oauth.token_requests == 2
            # many calls refused at once still refresh once
            api.tokens.revoke_all()
            await asyncio.gather(*(customers.get("C000042") for _ in range(50)))
    assert customer == customer_for("C000042")
    assert oauth.token_requests == 3 and api.stats.tokens_issued == 3


async def test_a_second_401_after_the_refresh_is_final(start_sandbox: SandboxFactory) -> None:
    async with start_sandbox(OAUTH) as api:
        oauth = oauth_for(api)
        async with CustomerConnector(HttpSettings(base_url=api.url), auth=oauth) as customers:
            api.tokens.ttl = 0  # the API's clock runs ahead: its tokens expire before the client uses them
            with pytest.raises(PermanentError) as caught:
                await customers.get("C000042")
    assert caught.value.status == 401
    assert oauth.token_requests == 2, "one token, one refresh after the 401, no more"
    assert api.stats.requests["customers"] == 2


async def test_secrets_never_reach_logs_reprs_or_error_messages(
    start_sandbox: SandboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ConnectorError] = []
    async with start_sandbox(OAUTH) as api:
        good = oauth_for(api)
        async with CustomerConnector(HttpSettings(base_url=api.url), auth=good) as customers:
            await customers.get("C000001")
            tokens = list(api.tokens._tokens)
            api.tokens.revoke_all()
            await customers.get("C000001")
            tokens += list(api.tokens._tokens)
        bad = oauth_for(api, secret=SECRET + "-wrong")
        async with CustomerConnector(HttpSettings(base_url=api.url), auth=bad) as customers:
            try:
                await customers.get("C000001")
            except ConnectorError as exc:
                errors.append(exc)
    assert errors and errors[0].status == 401 and "refused the client credentials" in str(errors[0])
    visible = "\n".join([
        caplog.text, *(r.getMessage() for r in caplog.records), repr(good), repr(good.settings), repr(bad.settings),
        *(str(e) for e in errors), *(repr(e) for e in errors), repr(OAUTH),
    ])
    assert len(tokens) == 2
    for secret in (SECRET, SECRET + "-wrong", *tokens):
        assert secret not in visible
    assert "new access token" in caplog.text, "the token events are logged, without the token"


async def test_an_api_key_is_sent_and_a_wrong_one_is_refused_without_retries(start_sandbox: SandboxFactory) -> None:
    async with start_sandbox(SandboxConfig(risk_api_key="k-123")) as api:
        request = RiskRequest("C000001", 100, "EUR")
        right = ApiKeyAuth(ApiKeySettings(SecretStr("k-123")))
        async with RiskScoreConnector(HttpSettings(base_url=api.url), auth=right) as risk:
            assert (await risk.score(request)).value.band in ("low", "medium", "high")
        wrong = ApiKeyAuth(ApiKeySettings(SecretStr("k-999")))
        async with RiskScoreConnector(HttpSettings(base_url=api.url), auth=wrong) as risk:
            with pytest.raises(PermanentError) as caught:
                await risk.score(request)
    assert caught.value.status == 401 and api.stats.requests["risk"] == 2
    assert "k-123" not in repr(right) + repr(right.settings)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sandbox test CA")
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(extension + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


async def test_mtls_client_certificates_are_presented_and_required(start_sandbox: SandboxFactory, pki: Path) -> None:
    server_tls = mtls_context(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    async with start_sandbox(ssl_context=server_tls) as api:
        assert api.url.startswith("https://")
        tls = TlsSettings(
            ca_file=str(pki / "ca.pem"), cert_file=str(pki / "client.pem"), key_file=str(pki / "client.key")
        )
        async with CustomerConnector(HttpSettings(base_url=api.url, tls=tls)) as customers:
            assert await customers.get("C000042") == customer_for("C000042")
        no_cert = TlsSettings(ca_file=str(pki / "ca.pem"))
        async with CustomerConnector(HttpSettings(base_url=api.url, tls=no_cert, max_attempts=1)) as customers:
            with pytest.raises(ConnectorError):
                await customers.get("C000042")
    assert api.stats.customer_requests == 1, "the call without a client certificate never reached the API"
