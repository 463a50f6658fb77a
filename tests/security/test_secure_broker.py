"""Clients reach the secure broker over TLS with SASL, exactly as the settings configure them."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from confluent_kafka.admin import AclOperation, ResourceType
from faust.auth import SASLCredentials, SSLCredentials

from streams.kafka.clients import producer, read_records
from streams.security import faust_credentials, kafka_security
from streams.settings import Settings
from tests.security.certs import TestPki
from tests.security.conftest import SecureKafka

pytestmark = pytest.mark.integration


def settings_for(kafka: SecureKafka, user: str, mechanism: str = "SCRAM-SHA-512", **extra: object) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka.bootstrap, kafka_security_protocol="SASL_SSL",
                    kafka_ssl_cafile=kafka.ca_file, kafka_sasl_mechanism=mechanism,
                    kafka_sasl_username=user, kafka_sasl_password=kafka.passwords[user], **extra)


def grant_topic(kafka: SecureKafka, user: str, topic: str) -> None:
    kafka.create_topics({topic: 1})
    kafka.grant(user, ResourceType.TOPIC, topic, [AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE])


@pytest.mark.parametrize(("user", "mechanism"), [("shop", "SCRAM-SHA-512"), ("legacy", "PLAIN")])
async def test_a_user_produces_and_reads_over_tls_with_its_sasl_mechanism(
    secure_kafka: SecureKafka, unique: str, user: str, mechanism: str
) -> None:
    topic = f"sec-{mechanism.lower()}-{unique}"
    grant_topic(secure_kafka, user, topic)
    security = kafka_security(settings_for(secure_kafka, user, mechanism))
    context = security["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    async with producer(secure_kafka.bootstrap, security=security) as client:
        await client.send_and_wait(topic, b"hello", key=b"k")
    records = await read_records(secure_kafka.bootstrap, [topic], until=1, deadline=30, security=security)
    assert [r.value for r in records] == [b"hello"]


async def test_a_client_certificate_with_an_encrypted_key_is_loaded_with_its_password(
    secure_kafka: SecureKafka, unique: str
) -> None:
    topic = f"sec-mtls-{unique}"
    grant_topic(secure_kafka, "shop", topic)
    settings = settings_for(secure_kafka, "shop", kafka_ssl_certfile=secure_kafka.client_cert.cert,
                            kafka_ssl_keyfile=secure_kafka.client_cert.key,
                            kafka_ssl_key_password=secure_kafka.client_key_password)
    async with producer(secure_kafka.bootstrap, security=kafka_security(settings)) as client:
        await client.send_and_wait(topic, b"with a client certificate")
    wrong = settings.model_copy(update={"kafka_ssl_key_password": None})
    with pytest.raises(ValueError, match="cannot set up TLS for Kafka") as caught:
        kafka_security(wrong)
    assert secure_kafka.client_key_password not in str(caught.value)


async def test_a_wrong_password_is_an_authentication_error_that_does_not_show_it(
    secure_kafka: SecureKafka, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + secure_kafka.passwords["shop"]
    client = AIOKafkaProducer(bootstrap_servers=secure_kafka.bootstrap,
                              **secure_kafka.security("shop", password=wrong))
    with pytest.raises(KafkaError) as caught:
        await client.start()  # aiokafka raises "Unable to bootstrap"; the reason is in its log
    await client.stop()
    assert "SaslAuthenticationFailed" in caplog.text and "invalid credentials" in caplog.text
    assert wrong not in str(caught.value) and wrong not in repr(caught.value) and wrong not in caplog.text


async def test_a_broker_certificate_from_another_ca_is_refused(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    rogue = TestPki.create(tmp_path, "rogue")
    settings = settings_for(secure_kafka, "shop").model_copy(update={"kafka_ssl_cafile": rogue.ca_file})
    client = AIOKafkaProducer(bootstrap_servers=secure_kafka.bootstrap, request_timeout_ms=5000,
                              **kafka_security(settings))
    with pytest.raises((KafkaError, ssl.SSLError, OSError)):
        await client.start()
    await client.stop()


def test_faust_gets_the_same_credentials(secure_kafka: SecureKafka) -> None:
    credentials = faust_credentials(settings_for(secure_kafka, "worker"))
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.ssl_context is not None and credentials.ssl_context.check_hostname
    assert secure_kafka.passwords["worker"] not in repr(credentials)
    tls_only = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=secure_kafka.ca_file)
    assert isinstance(faust_credentials(tls_only), SSLCredentials)
    assert faust_credentials(Settings()) is None


def test_the_cli_produces_and_consumes_over_sasl_ssl(secure_kafka: SecureKafka, unique: str,
                                                    tmp_path: Path) -> None:
    topic = f"sec-cli-{unique}"
    grant_topic(secure_kafka, "shop", topic)
    env = {**os.environ, **secure_kafka.worker_env("shop"), "STREAMS_APP": "pipelines.orders:pipeline",
           "STREAMS_INPUT_TOPIC": topic,
           "STREAMS_OUTPUT_TOPIC": topic}
    produced = subprocess.run([sys.executable, "-m", "streams", "produce", "--count", "3"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=90)
    assert produced.returncode == 0, produced.stderr[-2000:]
    consumed = subprocess.run([sys.executable, "-m", "streams", "consume", "--max", "3", "--idle", "10"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    lines = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert len(lines) == 3 and all("event_id" in line["value"] for line in lines)
    assert secure_kafka.passwords["shop"] not in produced.stdout + produced.stderr + consumed.stderr
