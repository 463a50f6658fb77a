"""Settings → credentials for the Kafka clients the project builds (aiokafka, Faust); the APIs' own
are ``streams.api``'s, from ``STREAMS_API_<NAME>_*``.

    security = kafka_security(settings)             # aiokafka kwargs, also for clients.py helpers
    consumer = AIOKafkaConsumer(bootstrap_servers=..., **security)
    app = faust.App(..., broker_credentials=faust_credentials(settings))

One place decides how TLS contexts are made: certificates verified against the configured CAs,
host names checked, TLS 1.2 at least. Secret values leave their ``SecretStr`` only here, on
their way into a client.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from streams.settings import Settings

MINIMUM_TLS = ssl.TLSVersion.TLSv1_2


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the brokers, or None when the protocol uses no TLS."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(  # check_hostname=True, CERT_REQUIRED (aiokafka's helper)
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=password.get_secret_value() if password is not None else None,
        )
    except (OSError, ssl.SSLError) as exc:
        # ssl errors may quote file contents' positions but never a password; keep the class only
        raise ValueError(f"cannot set up TLS for Kafka from the STREAMS_KAFKA_SSL_* files: "
                         f"{type(exc).__name__}") from None
    context.minimum_version = MINIMUM_TLS
    return context


def kafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka client kwargs (producer, consumer, admin) for the configured security protocol."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None  # the settings validator insists
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return kwargs


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the same protocol (Faust passes them to aiokafka)."""
    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None
        return SASLCredentials(  # with an ssl_context Faust makes it SASL_SSL
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None
