"""Worker settings: typed, frozen, read from the environment or a ``.env`` file.

Every variable is ``STREAMS_<FIELD>`` (``STREAMS_PIPELINE``, ``STREAMS_MAX_IN_FLIGHT``, ...),
except the broker address, which also answers to the conventional ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.secret_files import SecretFileSettings, secret_field_names
from streams.telemetry.redaction import register_secret

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run from a source checkout (or an editable install of one), state goes to the checkout's .local/;
# installed (site-packages), to ./.streams/ of the folder the worker is started in.
IN_SOURCE_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()
DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "worker" if IN_SOURCE_CHECKOUT else Path(".streams") / "worker"


class Settings(SecretFileSettings):
    """One pipeline worker's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMS_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True,
        hide_input_in_errors=True,  # a rejected value may be a secret: errors name the setting only
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "STREAMS_KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of Kafka brokers.",
    )
    app: str | None = Field(default=None, description="The pipeline to run, module:attribute (as --app).")
    config: Path | None = Field(default=None, description="The pipeline to run, a YAML file (as --config).")
    pipeline: str | None = Field(default=None, description="Overrides the pipeline's name (its consumer group id).")
    input_topic: str | None = Field(default=None, description="Overrides the pipeline's input topic.")
    output_topic: str | None = Field(default=None, description="Overrides the pipeline's output topic.")
    schemas_dir: Path | None = Field(default=None, description="Overrides the pipeline's schema folder.")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible Schema Registry URL; unset: the pipeline's schema folder."
    )
    http_timeout: float = Field(default=5.0, gt=0, description="Seconds one API call attempt may take (every API's "
                                "default; STREAMS_API_<NAME>_TIMEOUT for one).")
    stuck_after: float = Field(default=120.0, gt=0, description="Seconds paused for an open circuit: not ready.")
    http_max_attempts: int = Field(default=3, ge=1, le=10, description="In-call attempts per API call (every "
                                   "API's default; STREAMS_API_<NAME>_RETRIES for one).")
    max_in_flight: int = Field(default=256, ge=1, description="Events processed concurrently per worker.")
    max_buffered: int = Field(default=5000, ge=1, description="Events queued in a worker, in flight included.")
    retry_delays: str = Field(default="5s,1m,10m", description="Comma-separated retry tier delays.")
    strict_key_order: bool = Field(default=False, description="Later events of a key wait behind its retries.")
    dedupe: str = Field(default="count", pattern="^(off|count|drop)$",
                        description="Processed event ids: off, count duplicates, or drop them.")
    dedupe_max_ids: int = Field(
        default=20_000, ge=1000, description="Event ids remembered per partition (~180 bytes each): redeliveries "
        "come from the last commit interval and the buffered events, far fewer; memory stays flat however many "
        "events a worker has processed.")
    dedupe_retention_hours: float = Field(default=168.0, gt=0, description="How long processed ids are kept.")
    drain_deadline: float = Field(default=20.0, gt=0, description="Seconds in-flight events get on rebalance/stop.")
    batch_size: int = Field(default=500, ge=1, description="Most events taken from the stream at once.")
    batch_linger: float = Field(default=0.01, gt=0, description="Seconds to wait for a batch to fill "
                                "(every event waits up to this long before it starts; bench/PROFILE.md).")
    producer_linger_ms: int = Field(default=5, ge=0, description="Producer linger, milliseconds.")
    producer_batch_bytes: int = Field(default=256 * 1024, ge=1024, description="Producer batch size, bytes.")
    producer_timeout: float = Field(
        default=1200.0, gt=0, description="Seconds a produced record may wait for the broker (no leader, broker "
        "down) before the send fails and the worker stops (docs/broker-outages.md): a broker outage shorter than "
        "this is waited out.")
    runtime: Literal["aiokafka", "faust"] = Field(
        default="aiokafka", description="The worker's Kafka runtime: aiokafka (its own consumer and producer, "
        "streams/kafka/worker.py) or faust (a Faust app, streams/app.py: to run inside an existing Faust app).")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto", description="The worker's event loop: auto is uvloop where installed, asyncio's "
        "when Kafka is reached over TLS (streams/runtime.py).")
    gc_gen0_threshold: int = Field(
        default=50_000, ge=0, description="Allocations between young-generation collections; 0 keeps Python's "
        "default (700). Buffered events survive into the old generation, whose full scans cost ~18% of a "
        "worker's CPU at the default (bench/PROFILE.md).")
    session_timeout: float = Field(default=10.0, gt=0, description="Seconds before a silent worker leaves the group.")
    commit_interval: float = Field(default=1.0, gt=0, description="Seconds between offset commits (with "
                                   "exactly-once: between transactions).")
    guarantee: Literal["at-least-once", "exactly-once"] = Field(
        default="at-least-once", description="at-least-once, or exactly-once: outputs, retries, dead letters and "
        "input offsets in one Kafka transaction per commit interval, for read_committed consumers (the aiokafka "
        "runtime only; docs/exactly-once.md). API calls stay at least once.")
    transactional_id: str | None = Field(
        default=None, description="With exactly-once: this worker's transactional id, stable across its restarts "
        "(e.g. a StatefulSet pod name) so that a restart fences its predecessor at once; never shared by two live "
        "workers. Unset: a fresh one per start (docs/exactly-once.md).")
    web_enabled: bool = Field(default=False, description="Serve the worker's web endpoints.")
    web_port: int = Field(default=6066, ge=0, le=65535)
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, description="Worker state folder.")
    log_level: str = Field(default="info,aiokafka=warning,faust=warning,mode=warning",
                           description="Root level, then logger=level pairs, comma-separated.")
    log_format: str = Field(default="json", pattern="^(json|text)$", description="json lines or text.")
    trace_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Where spans go: none (ids still propagate), console, otlp.")
    otlp_endpoint: str | None = Field(default=None, description="OTLP/HTTP traces URL (.../v1/traces).")
    announce_interval: float = Field(
        default=5.0, ge=0, description="Seconds between the worker's announcements of its state to "
        "<pipeline>.workers (read by streams console); 0 announces nothing.")
    telemetry_enabled: bool = Field(default=True, description="Serve /metrics, /healthz and /readyz.")
    telemetry_host: str = Field(default="127.0.0.1")
    telemetry_port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port.")

    # Security (docs/security.md). Secrets are SecretStr, each also settable from a file named
    # by <VARIABLE>_FILE; no default holds a credential.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers.")
    kafka_ssl_cafile: FilePath | None = Field(default=None, description="PEM CAs to trust (default: the system's).")
    kafka_ssl_certfile: FilePath | None = Field(default=None, description="PEM client certificate chain (mTLS).")
    kafka_ssl_keyfile: FilePath | None = Field(default=None, description="PEM private key of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Password of an encrypted key.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism with SASL_* protocols.")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user (the worker's principal).")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    max_record_bytes: int = Field(
        default=512 * 1024, ge=1024, le=900_000,
        description="Larger input values are dead-lettered unread (poison). At most 900,000: a dead letter "
                    "carries the value, and the worker's producer sends requests of at most 1,000,000 bytes.")

    @model_validator(mode="after")
    def _security_is_consistent(self) -> Self:
        # mode="after": an error here shows no input (the raw values might be secrets)
        protocol = self.kafka_security_protocol
        tls = protocol in ("SSL", "SASL_SSL")
        sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        problems = []
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            problems.append(f"STREAMS_KAFKA_SASL_USERNAME and STREAMS_KAFKA_SASL_PASSWORD are required with "
                            f"STREAMS_KAFKA_SECURITY_PROTOCOL={protocol}")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            problems.append(f"SASL credentials are set but STREAMS_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                            "SASL (SASL_SSL?)")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile,
                     self.kafka_ssl_key_password)
        if not tls and any(v is not None for v in tls_files):
            problems.append(f"STREAMS_KAFKA_SSL_* is set but STREAMS_KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                            "TLS (SSL or SASL_SSL?)")
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            problems.append("STREAMS_KAFKA_SSL_KEYFILE is set without STREAMS_KAFKA_SSL_CERTFILE")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_is_host_port_list(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"broker address {server!r} must be host:port")
        if not servers:
            raise ValueError("at least one broker host:port is required")
        return ",".join(servers)

    @field_validator("retry_delays")
    @classmethod
    def _delays_parse(cls, value: str) -> str:
        from streams.engine.retry import parse_delay

        for delay in value.split(","):
            if delay.strip():
                parse_delay(delay)
        return value

    @property
    def retry_delay_list(self) -> list[str]:
        return [delay.strip() for delay in self.retry_delays.split(",") if delay.strip()]

    @property
    def bootstrap_list(self) -> list[str]:
        return self.kafka_bootstrap_servers.split(",")


@dataclass(frozen=True, slots=True)
class PipelineNames:
    """A pipeline's name (its consumer group) and topics, as ``streams.loader.for_pipeline`` set them."""

    pipeline: str
    input_topic: str
    output_topic: str


def pipeline_names(settings: Settings) -> PipelineNames:
    """The name and topics of settings from ``for_pipeline``, where they are always set (in
    ``Settings`` they are optional: None stands for the pipeline's own)."""
    if not (settings.pipeline and settings.input_topic and settings.output_topic):
        raise ValueError("settings without a pipeline name and topics: make them with streams.loader.for_pipeline")
    return PipelineNames(settings.pipeline, settings.input_topic, settings.output_topic)


def register_settings_secrets(settings: BaseSettings) -> None:
    """Register every ``SecretStr`` value of the settings for redaction in logs and spans."""
    for name in secret_field_names(type(settings)):
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
