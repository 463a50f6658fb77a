"""The ``streams`` command: run workers, produce and consume events, manage the local broker."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from streams.settings import Settings, register_settings_secrets


def load_settings() -> Settings:
    """Settings from the environment, or a clear message naming each bad setting.

    Only the setting and pydantic's message are shown, never the rejected value (it may be a
    secret). Every secret value is registered for redaction before anything can log it.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                 for err in exc.errors(include_input=False)]
        raise click.ClickException("invalid settings:\n" + "\n".join(lines)) from None
    except SettingsError as exc:  # a *_FILE secret that cannot be read, or a value and a file both set
        raise click.ClickException(f"invalid settings:\n  {exc}") from None
    register_settings_secrets(settings)
    return settings


def kafka_security_for(settings: Settings) -> dict[str, Any]:
    """aiokafka kwargs for the configured Kafka security (TLS, SASL); a clear error if unusable."""
    from streams.security import kafka_security

    try:
        return kafka_security(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def serde_for(settings: Settings) -> Any:
    """The Avro serde over the registry the settings name (embedded schemas/ by default)."""
    from streams.serde import AvroSerde
    from streams.serde.factory import registry_from_url

    return AvroSerde(registry_from_url(settings.schema_registry_url))


@click.group()
def main() -> None:
    """Streaming enrichment pipelines on Apache Kafka."""


@main.command()
def worker() -> None:
    """Run a pipeline worker in the consumer group named after the pipeline."""
    from streams.app import create_app, prepare_topics
    from streams.runtime import tune_runtime
    from streams.telemetry import PipelineMetrics, configure_logging, configure_tracing, faust_worker

    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_format == "json")
    try:
        runtime = tune_runtime(settings)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    logging.getLogger("streams.worker").info("runtime: %s", runtime)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(prepare_topics(settings))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    tracer_provider = configure_tracing(settings.trace_exporter, service_name=settings.pipeline,  # type: ignore[arg-type]
                                        otlp_endpoint=settings.otlp_endpoint)
    app = create_app(settings, metrics=PipelineMetrics(settings.pipeline))
    try:
        faust_worker(app).execute_from_commandline()
    finally:
        tracer_provider.shutdown()


@main.command()
@click.option("--count", default=100, show_default=True, help="Sample events to produce.")
@click.option("--topic", default=None, help="Topic (default: the pipeline's input topic).")
@click.option("--seed", default=7, show_default=True, help="Seed for the sample data.")
@click.option("--file", "path", type=click.File("r"), default=None, help="JSON lines of OrderPlaced records instead.")
def produce(count: int, topic: str | None, seed: int, path: Any) -> None:
    """Produce Avro-encoded OrderPlaced events to the input topic."""
    from streams.pipelines.orders import ORDER_PLACED
    from streams.samples import sample_orders

    settings = load_settings()
    orders = [json.loads(line) for line in path if line.strip()] if path else sample_orders(count, seed=seed)
    sent = asyncio.run(_produce(settings, topic or settings.input_topic, ORDER_PLACED, orders))
    click.echo(f"produced {sent} events to {topic or settings.input_topic}")


async def _produce(settings: Settings, topic: str, subject: str, records: list[dict[str, Any]]) -> int:
    from streams.kafka.clients import producer

    serde = serde_for(settings)
    async with producer(settings.kafka_bootstrap_servers, security=kafka_security_for(settings)) as client:
        futures = [
            await client.send(topic, serde.encode(subject, r), key=str(r["customer_id"]).encode()) for r in records
        ]
        await asyncio.gather(*futures)
    return len(futures)


@main.command()
@click.option("--topic", default=None, help="Topic (default: the pipeline's output topic).")
@click.option("--max", "limit", default=None, type=int, help="Stop after this many records.")
@click.option("--idle", default=3.0, show_default=True, help="Stop after this many seconds without a record.")
def consume(topic: str | None, limit: int | None, idle: float) -> None:
    """Decode an Avro topic from the beginning and print one JSON object a line."""
    from streams.kafka.clients import read_records
    from streams.serde.avro import AvroDecodeError
    from streams.serde.registry import UnknownSchemaError
    from streams.serde.wire import WireFormatError

    settings = load_settings()
    name = topic or settings.output_topic
    serde = serde_for(settings)
    records = asyncio.run(read_records(settings.kafka_bootstrap_servers, [name], until=limit, idle_timeout=idle,
                                       security=kafka_security_for(settings)))
    for record in records[:limit]:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        try:
            value: Any = serde.decode(record.value)
        except (WireFormatError, UnknownSchemaError, AvroDecodeError) as exc:
            value = {"undecodable": str(exc), "bytes": len(record.value or b"")}
        line = {"partition": record.partition, "offset": record.offset, "headers": headers, "value": value}
        click.echo(json.dumps(line, default=_json_default))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _parse_time(text: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 time (UTC when it names no zone)."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _selection_options(command: Any) -> Any:
    for option in reversed([
        click.option("--kind", type=click.Choice(["transient", "permanent", "poison"]), help="Error kind."),
        click.option("--class", "error_class", help="Error class, e.g. PermanentError."),
        click.option("--connector", help="Connector that failed."),
        click.option("--status", type=int, help="HTTP status of the failed call."),
        click.option("--since", help="First failure at or after (ISO 8601 or epoch ms)."),
        click.option("--until", help="First failure before (ISO 8601 or epoch ms)."),
        click.option("--key", help="Record key (UTF-8)."),
        click.option("--ref", "refs", multiple=True, help="PARTITION:OFFSET of one dead letter (repeatable)."),
    ]):
        command = option(command)
    return command


def _selection(kind: str | None, error_class: str | None, connector: str | None, status: int | None,
               since: str | None, until: str | None, key: str | None, refs: tuple[str, ...]) -> Any:
    from streams.dlq import DeadLetterFilter

    try:
        return DeadLetterFilter(kind, error_class, connector, status, _parse_time(since), _parse_time(until), key,
                                frozenset(refs))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.group()
def dlq() -> None:
    """Inspect the pipeline's dead letters and replay them."""


@dlq.command("list")
@_selection_options
def dlq_list(**criteria: Any) -> None:
    """One line per matching dead letter: where, which event, why."""
    from streams.dlq import read_dead_letters
    from streams.names import Header

    settings = load_settings()
    letters = asyncio.run(read_dead_letters(settings.kafka_bootstrap_servers, settings.pipeline,
                                            _selection(**criteria), security=kafka_security_for(settings)))
    for letter in letters:
        failed = letter.header(Header.FIRST_FAILURE_AT)
        when = datetime.fromtimestamp(int(failed) / 1000, UTC).isoformat(timespec="seconds") if failed else "?"
        click.echo(f"{letter.ref:>10}  {when}  {letter.header(Header.EVENT_ID)}  "
                   f"{letter.header(Header.ERROR_KIND)}  {letter.header(Header.ERROR_CLASS)}  "
                   f"status={letter.header(Header.ERROR_STATUS) or '-'}  "
                   f"connector={letter.header(Header.ERROR_CONNECTOR) or '-'}  "
                   f"{letter.header(Header.ERROR_MESSAGE)}")
    click.echo(f"{len(letters)} dead letters", err=True)


@dlq.command("show")
@click.argument("ref")
def dlq_show(ref: str) -> None:
    """Everything about one dead letter (REF is PARTITION:OFFSET): headers and decoded value."""
    from streams.dlq import DeadLetterFilter, read_dead_letters

    settings = load_settings()
    letters = asyncio.run(read_dead_letters(settings.kafka_bootstrap_servers, settings.pipeline,
                                            DeadLetterFilter(refs=frozenset([ref])),
                                            security=kafka_security_for(settings)))
    if not letters:
        raise click.ClickException(f"no dead letter at {ref}")
    letter = letters[0]
    try:
        value: Any = serde_for(settings).decode(letter.value)
    except (ValueError, LookupError) as exc:
        value = {"undecodable": str(exc), "hex": (letter.value or b"")[:256].hex()}
    click.echo(json.dumps({"ref": letter.ref, "key": (letter.key or b"").decode("utf-8", "replace"),
                           "headers": letter.headers, "value": value}, indent=2, default=_json_default))


@dlq.command("replay")
@_selection_options
@click.option("--to", "target", default=None, help="Topic to replay to (default: the input topic).")
@click.option("--rate", default=100.0, show_default=True, help="Records per second at most.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; produce nothing.")
def dlq_replay(target: str | None, rate: float, dry_run: bool, **criteria: Any) -> None:
    """Produce the matching dead letters again, each at most once across runs."""
    from streams.dlq import read_dead_letters, replay

    settings = load_settings()
    security = kafka_security_for(settings)

    async def go() -> Any:
        letters = await read_dead_letters(settings.kafka_bootstrap_servers, settings.pipeline,
                                          _selection(**criteria), security=security)
        return await replay(settings.kafka_bootstrap_servers, settings.pipeline, letters,
                            target=target or settings.input_topic, rate=rate, dry_run=dry_run, security=security)

    report = asyncio.run(go())
    verb = "would replay" if dry_run else "replayed"
    count = len(report.refs) if dry_run else report.replayed
    click.echo(f"selected {report.selected}, {verb} {count} to {target or settings.input_topic}, "
               f"skipped {report.skipped} replayed before")
    if dry_run:
        for ref in report.refs:
            click.echo(f"  {ref}")


@main.group()
def kafka() -> None:
    """The project's local single-node Kafka broker (no Docker needed)."""


@kafka.command("start")
def kafka_start() -> None:
    """Fetch the broker jars if needed, start the broker, wait until it serves."""
    from streams.kafka.local import start_local_broker

    click.echo(start_local_broker())


@kafka.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    from streams.kafka.local import stop_local_broker

    stop_local_broker()


@kafka.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs (exit 3 when it does not)."""
    from streams.kafka.local import kafka_script

    result = kafka_script("status", check=False)
    click.echo(result.stdout.strip())
    sys.exit(result.returncode)


@main.command()
@click.option("--partitions", default=8, show_default=True, help="Partitions of the input and output topics.")
def topics(partitions: int) -> None:
    """Create the pipeline's input, output and dead-letter topics if they do not exist."""
    from streams.kafka.clients import ensure_topics
    from streams.names import dlq_topic

    settings = load_settings()
    wanted = {settings.input_topic: partitions, settings.output_topic: partitions, dlq_topic(settings.pipeline): 1}
    asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, wanted, security=kafka_security_for(settings)))
    click.echo("topics ready: " + ", ".join(wanted))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--latency-ms", default=0.0, show_default=True, help="Added to every API response.")
def sandbox(host: str, port: int, latency_ms: float) -> None:
    """Serve the sandbox API (the demo's stand-in for the external APIs)."""
    from aiohttp import web

    from sandbox.server import build_app

    web.run_app(build_app(latency_ms=latency_ms), host=host, port=port, access_log=None)


@main.command()
@click.option("--events", default=200, show_default=True, help="Sample events to produce.")
def demo(events: int) -> None:
    """Start what is needed, produce events, run the pipeline, show enriched records."""
    from streams.demo import run_demo

    sys.exit(asyncio.run(run_demo(load_settings(), events)))


def _add_schema_commands() -> None:
    from streams.contracts import schemas

    main.add_command(schemas)


_add_schema_commands()

if __name__ == "__main__":
    main()
