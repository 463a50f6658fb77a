"""Worker settings: typed, frozen, read from the environment or a ``.env`` file.

Every variable is ``STREAMS_<FIELD>`` (``STREAMS_PIPELINE``, ``STREAMS_MAX_IN_FLIGHT``, ...),
except the broker address, which also answers to the conventional ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """One pipeline worker's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMS_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "STREAMS_KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of Kafka brokers.",
    )
    pipeline: str = Field(default="orders-enricher", description="Pipeline name; also the consumer group id.")
    input_topic: str = Field(default="orders", description="Topic the pipeline consumes.")
    output_topic: str = Field(default="orders.enriched", description="Topic enriched records go to.")
    customers_api_url: str = Field(default="http://127.0.0.1:8080", description="Base URL of the customer API.")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible Schema Registry URL; unset: the embedded schemas/."
    )
    http_timeout: float = Field(default=5.0, gt=0, description="Seconds one API call attempt may take.")
    customers_rate_limit: float | None = Field(
        default=None, gt=0, description="Customer API requests/s for the whole group; each worker takes its share."
    )
    stuck_after: float = Field(default=120.0, gt=0, description="Seconds paused for an open circuit: not ready.")
    http_max_attempts: int = Field(default=3, ge=1, le=10, description="In-call attempts per API call.")
    max_in_flight: int = Field(default=256, ge=1, description="Events processed concurrently per worker.")
    max_buffered: int = Field(default=5000, ge=1, description="Events queued in a worker, in flight included.")
    retry_delays: str = Field(default="5s,1m,10m", description="Comma-separated retry tier delays.")
    strict_key_order: bool = Field(default=False, description="Later events of a key wait behind its retries.")
    dedupe: str = Field(default="count", pattern="^(off|count|drop)$",
                        description="Processed event ids: off, count duplicates, or drop them.")
    dedupe_max_ids: int = Field(default=200_000, ge=1000, description="Event ids remembered per partition.")
    dedupe_retention_hours: float = Field(default=168.0, gt=0, description="How long processed ids are kept.")
    drain_deadline: float = Field(default=20.0, gt=0, description="Seconds in-flight events get on rebalance/stop.")
    batch_size: int = Field(default=500, ge=1, description="Most events taken from the stream at once.")
    batch_linger: float = Field(default=0.05, gt=0, description="Seconds to wait for a batch to fill.")
    producer_linger_ms: int = Field(default=5, ge=0, description="Producer linger, milliseconds.")
    producer_batch_bytes: int = Field(default=256 * 1024, ge=1024, description="Producer batch size, bytes.")
    session_timeout: float = Field(default=10.0, gt=0, description="Seconds before a silent worker leaves the group.")
    commit_interval: float = Field(default=1.0, gt=0, description="Seconds between offset commits.")
    web_enabled: bool = Field(default=False, description="Serve the worker's web endpoints.")
    web_port: int = Field(default=6066, ge=0, le=65535)
    data_dir: Path = Field(default=REPO_ROOT / ".local" / "worker", description="Worker state folder.")
    log_level: str = Field(default="info,aiokafka=warning,faust=warning,mode=warning",
                           description="Root level, then logger=level pairs, comma-separated.")
    log_format: str = Field(default="json", pattern="^(json|text)$", description="json lines or text.")
    trace_exporter: str = Field(default="none", pattern="^(none|console|otlp)$",
                                description="Where spans go: none (ids still propagate), console, otlp.")
    otlp_endpoint: str | None = Field(default=None, description="OTLP/HTTP traces URL (.../v1/traces).")
    telemetry_enabled: bool = Field(default=True, description="Serve /metrics, /healthz and /readyz.")
    telemetry_host: str = Field(default="127.0.0.1")
    telemetry_port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port.")

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
