"""A whole run with every secret configured: no secret value in logs, errors, spans or records.

The worker talks SASL_SSL (SCRAM password from a *_FILE, a client certificate whose key is
encrypted) to the secure broker, and OAuth2 + mTLS (client secret, encrypted client key) to
the sandbox. Spans go to the console exporter, so the worker's log holds logs, tracebacks and
span attributes alike. Events include poison, rule-breaking ones, and a token revoked mid-run
(a 401, a refresh). Afterwards the log, every record's headers and the CLI's output are
scanned for each secret in the forms it could take.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from pipelines.orders import ORDER_PLACED
from sandbox.server import SandboxConfig, SandboxServer, mtls_context
from streams.names import Header
from tests.integration.harness import wait_for
from tests.security.certs import TestPki
from tests.security.conftest import SecureKafka
from tests.security.helpers import SERDE, SecurePipeline, orders

pytestmark = pytest.mark.integration

GOOD, RULE_BREAKING, POISON = 40, 5, 3


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[SandboxServer, TestPki, dict[str, str]]]:
    pki = TestPki.create(tmp_path / "api-pki", "api")
    cert = pki.issue("sandbox", hosts=("localhost", "127.0.0.1"))
    client_secret = secrets.token_urlsafe(18) + "+/=&%é"  # characters that change when encoded
    config = SandboxConfig(oauth_clients={"pipeline": client_secret}, oauth_scopes={"pipeline": ("customers:read",)})
    context = mtls_context(str(cert.cert), str(cert.key), client_ca_file=str(pki.ca_file))
    async with SandboxServer(config=config, ssl_context=context) as server:
        yield server, pki, {"client_secret": client_secret}


def _forms(secret: str) -> set[str]:
    """The spellings a secret could leak in: raw, URL-encoded, JSON-escaped, and inside Basic auth."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


async def test_a_full_run_with_every_secret_configured_leaks_none(
    secure_kafka: SecureKafka, api: tuple[SandboxServer, TestPki, dict[str, str]], unique: str, tmp_path: Path
) -> None:
    server, api_pki, api_secrets = api
    api_key_password = secrets.token_urlsafe(16) + "\"'\\ü"
    api_client = api_pki.issue("pipeline-client", client=True, key_password=api_key_password)
    files = tmp_path / "secrets"
    files.mkdir(mode=0o700)
    (files / "kafka-key-password").write_text(secure_kafka.client_key_password + "\n")
    pipeline = SecurePipeline(secure_kafka, f"https://localhost:{server.port}", f"leak-{unique}", 2, tmp_path)
    pipeline.create_topics()
    pipeline.grant_clients()
    pipeline.grant_worker()
    env = {
        "STREAMS_KAFKA_SSL_CERTFILE": str(secure_kafka.client_cert.cert),
        "STREAMS_KAFKA_SSL_KEYFILE": str(secure_kafka.client_cert.key),
        "STREAMS_KAFKA_SSL_KEY_PASSWORD_FILE": str(files / "kafka-key-password"),
        "STREAMS_API_CUSTOMERS_CLIENT_ID": "pipeline",
        "STREAMS_API_CUSTOMERS_SCOPE": "customers:read",
        "STREAMS_API_CUSTOMERS_CLIENT_SECRET": api_secrets["client_secret"],
        "STREAMS_API_CUSTOMERS_CA_FILE": str(api_pki.ca_file),
        "STREAMS_API_CUSTOMERS_CERT_FILE": str(api_client.cert),
        "STREAMS_API_CUSTOMERS_KEY_FILE": str(api_client.key),
        "STREAMS_API_CUSTOMERS_KEY_PASSWORD": api_key_password,
        "STREAMS_TRACE_EXPORTER": "console",
        "STREAMS_LOG_LEVEL": "debug,aiokafka=info,faust=info,mode=info,asyncio=info",
    }
    good = orders(GOOD, "leak")
    bad = [{**o, "currency": "euro"} for o in orders(RULE_BREAKING, "bad")]
    poison = [(b"not avro " + bytes([n]), [("traceparent", b"\xff\r\n")]) for n in range(POISON)]
    # a good event whose producer forged hop headers: due in 300 years, from a partition that does
    # not exist, on its 999th attempt. Believed, they would hold or break the partition.
    forged = [(SERDE.encode(ORDER_PLACED, orders(1, "forged")[0]),
               [(Header.NOT_BEFORE, b"9999999999999"), (Header.ORIGIN_PARTITION, b"99"), (Header.ATTEMPT, b"999")])]
    total = GOOD + RULE_BREAKING + POISON + len(forged)

    with pipeline.worker(**env) as worker:
        await pipeline.produce(good[: GOOD // 2])
        await wait_for(lambda: server.stats.tokens_issued >= 1, 60, "the worker's first token")
        server.tokens.revoke_all()  # the next call gets a 401 and the worker fetches a new token
        await pipeline.produce(good[GOOD // 2:] + bad, raw=poison + forged)
        records = await pipeline.read([pipeline.output_topic, pipeline.dlq], until=total, deadline=90)
        assert worker.alive, worker.log_tail()
    assert len(records) == total
    assert sum(r.topic == pipeline.output_topic for r in records) == GOOD + len(forged)
    assert server.stats.tokens_issued >= 2, "the revoked token was replaced"

    cli_env = {**pipeline.worker(**env).env, **secure_kafka.worker_env("auditor")}  # reads the DLQ; the worker can't
    listed = subprocess.run([sys.executable, "-m", "streams", "dlq", "list"], env=cli_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=90)
    # a CLI run that fails authentication, so its error path is scanned too
    wrong = {**cli_env, "STREAMS_KAFKA_SASL_PASSWORD_FILE": str(files / "kafka-key-password")}
    refused = subprocess.run([sys.executable, "-m", "streams", "consume", "--max", "1", "--idle", "3"], env=wrong,
                             cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert refused.returncode != 0

    configured = {
        "kafka_sasl_password": secure_kafka.passwords["worker"],
        "kafka_ssl_key_password": secure_kafka.client_key_password,
        "customers_oauth_client_secret": api_secrets["client_secret"],
        "customers_tls_key_password": api_key_password,
    }
    basic = base64.b64encode(f"pipeline:{quote_plus(api_secrets['client_secret'])}".encode()).decode()
    tokens = list(server.tokens._tokens)  # the access tokens the sandbox issued (bearer secrets too)
    needles = {name: _forms(value) for name, value in configured.items()}
    needles["basic auth header"] = {basic}
    needles |= {f"access token {n}": {token} for n, token in enumerate(tokens)}

    log = worker.log_path.read_text(errors="replace")
    assert log.count('"attributes"') >= GOOD, "the spans (console exporter) must be in the scanned output"
    haystacks = {
        "worker log (logs, tracebacks, console spans)": log,
        "record headers": "\n".join(f"{k}={v!r}" for r in records for k, v in r.headers),
        "cli dlq list": listed.stdout + listed.stderr,
        "cli refused": refused.stdout + refused.stderr,
    }
    leaks = [f"{name} in {where}" for where, text in haystacks.items()
             for name, forms in needles.items() if any(form in text for form in forms)]
    assert leaks == [], leaks
    print(f"\nscanned {len(log):,} bytes of worker log, {len(records)} records' headers and two CLI runs for "
          f"{sum(len(f) for f in needles.values())} secret spellings: none found")
