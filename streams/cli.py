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

from streams.settings import Settings, pipeline_names, register_settings_secrets


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
    """The Avro serde over the registry the settings name (the pipeline's schema folder by default)."""
    from streams.serde import AvroSerde
    from streams.serde.factory import registry_from_url

    try:
        return AvroSerde(registry_from_url(settings.schema_registry_url, schemas_dir=settings.schemas_dir))
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None


def pipeline_options(command: Any) -> Any:
    """``--app`` and ``--config``: which pipeline a command is about."""
    command = click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                           help="The pipeline as a YAML file (or STREAMS_CONFIG).")(command)
    return click.option("--app", "app", default=None, metavar="MODULE:ATTRIBUTE",
                        help="The pipeline's module and attribute, e.g. pipelines.orders:pipeline "
                             "(or STREAMS_APP).")(command)


def load_pipeline_settings(app: str | None, config: str | None) -> tuple[Any, Settings]:
    """The pipeline named by --app/--config (else STREAMS_APP/STREAMS_CONFIG) and the settings
    its commands run with; a clear message when either cannot be had."""
    from streams.loader import for_pipeline, load_pipeline
    from streams.pipeline import PipelineError

    settings = load_settings()
    if app is None and config is None:
        app, config = settings.app, (str(settings.config) if settings.config else None)
    try:
        pipeline = load_pipeline(app, config)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    return pipeline, for_pipeline(settings, pipeline)


@click.group()
@click.version_option(package_name="streams", prog_name="streams", message="%(prog)s %(version)s")
def main() -> None:
    """Streaming enrichment pipelines on Apache Kafka."""


@main.command(epilog="Settings, from the environment or a .env file (a secret also from <VARIABLE>_FILE):\n\n"
              + "\n\n".join(
                  f"{' / '.join(map(str, getattr(f.validation_alias, 'choices', ()))) or 'STREAMS_' + name.upper()}"
                  f" (default: {str(v).lower() if isinstance(v, bool) else 'unset' if v is None else v})"
                  f"{': ' + f.description if f.description else ''}"
                  for name, f in Settings.model_fields.items() for v in [f.get_default(call_default_factory=True)]))
@pipeline_options
def worker(app: str | None, config: str | None) -> None:
    """Run a worker of the pipeline, in the consumer group named after it."""
    from streams.assembly import bind_pipeline, prepare_topics
    from streams.runtime import tune_runtime
    from streams.telemetry import PipelineMetrics, configure_logging, configure_tracing, faust_worker

    pipeline, settings = load_pipeline_settings(app, config)
    names = pipeline_names(settings)
    try:
        bind_pipeline(pipeline, settings)
    except (ValueError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
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
    tracer_provider = configure_tracing(settings.trace_exporter, service_name=names.pipeline,
                                        otlp_endpoint=settings.otlp_endpoint)
    metrics = PipelineMetrics(names.pipeline)
    if settings.runtime == "aiokafka":
        from streams.kafka.worker import run_worker

        try:
            asyncio.run(run_worker(settings, pipeline, metrics))
        except Exception:
            logging.getLogger("streams.worker").exception("the worker stopped: nothing past the failed event is "
                                                          "committed; a restart reads it again")
            sys.exit(1)
        finally:
            tracer_provider.shutdown()
        return
    from streams.app import UnsupportedGuarantee, create_app

    try:
        worker_app = create_app(settings, pipeline, metrics=metrics)
    except UnsupportedGuarantee as exc:
        tracer_provider.shutdown()
        raise click.ClickException(str(exc)) from None
    try:
        faust_worker(worker_app).execute_from_commandline()
    finally:
        tracer_provider.shutdown()


@main.command()
@pipeline_options
@click.option("--file", "path", type=click.File("r"), default=None,
              help="JSON lines, one input record each ('-' reads standard input).")
@click.option("--count", default=None, type=int, help="Sample events instead (the pipeline's @pipeline.samples).")
@click.option("--seed", default=7, show_default=True, help="Seed for the sample events.")
@click.option("--key", "key_field", default=None, help="Field whose value becomes the record key (default: "
              "the samples' key field; else no key).")
@click.option("--topic", default=None, help="Topic (default: the pipeline's input topic).")
def produce(app: str | None, config: str | None, path: Any, count: int | None, seed: int, key_field: str | None,
            topic: str | None) -> None:
    """Encode records with the pipeline's input schema and produce them to its input topic."""
    pipeline, settings = load_pipeline_settings(app, config)
    if (path is None) == (count is None):
        raise click.UsageError("give --file FILE (JSON lines) or --count N (sample events)")
    if path is not None:
        records = []
        for number, line in enumerate(path, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise click.ClickException(f"{path.name}:{number}: not JSON: {exc.msg}") from None
    else:
        if pipeline.sample_events is None:
            raise click.ClickException(f"pipeline {pipeline.name!r} has no samples (@pipeline.samples); "
                                       f"use --file")
        records = pipeline.sample_events(count, seed)
        key_field = key_field or pipeline.sample_key
    target = topic or pipeline_names(settings).input_topic
    sent = asyncio.run(_produce(settings, target, pipeline.input_subject, records, key_field))
    click.echo(f"produced {sent} events to {target}")


async def _produce(settings: Settings, topic: str, subject: str, records: list[dict[str, Any]],
                   key_field: str | None) -> int:
    from streams.kafka.clients import producer
    from streams.progress import progress
    from streams.serde.avro import AvroEncodeError

    serde = serde_for(settings)
    async with producer(settings.kafka_bootstrap_servers, security=kafka_security_for(settings)) as client:
        with progress(f"produce to {topic}", total=len(records), unit="events") as shown:
            futures = []
            for number, record in enumerate(records, 1):
                try:
                    value = serde.encode(subject, record)
                except (AvroEncodeError, LookupError) as exc:
                    raise click.ClickException(f"record {number} does not fit {subject}: {exc}") from None
                key = str(record[key_field]).encode() if key_field and record.get(key_field) is not None else None
                futures.append(await client.send(topic, value, key=key))
                futures[-1].add_done_callback(  # counted once the broker acknowledged it
                    lambda done: None if done.cancelled() or done.exception() else shown.advance())
            await asyncio.gather(*futures)
    return len(futures)


@main.command()
@pipeline_options
@click.option("--topic", default=None, help="Topic (default: the pipeline's output topic).")
@click.option("--max", "limit", default=None, type=int, help="Stop after this many records.")
@click.option("--idle", default=3.0, show_default=True, help="Stop after this many seconds without a record.")
def consume(app: str | None, config: str | None, topic: str | None, limit: int | None, idle: float) -> None:
    """Decode an Avro topic from the beginning and print one JSON object a line."""
    from streams.kafka.clients import read_records
    from streams.serde.avro import AvroDecodeError
    from streams.serde.registry import UnknownSchemaError
    from streams.serde.wire import WireFormatError

    _, settings = load_pipeline_settings(app, config)
    name = topic or pipeline_names(settings).output_topic
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
        click.option("--class", "error_class", help="Error class, e.g. Permanent."),
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
@pipeline_options
@_selection_options
def dlq_list(app: str | None, config: str | None, **criteria: Any) -> None:
    """One line per matching dead letter: where, which event, why."""
    from streams.dlq import iter_dead_letters
    from streams.names import Header
    from streams.progress import progress

    _, settings = load_pipeline_settings(app, config)
    names = pipeline_names(settings)
    selection, security = _selection(**criteria), kafka_security_for(settings)

    async def go() -> int:  # each letter printed as it is read, never the whole DLQ in memory
        listed = 0
        with progress("dlq list: read", unit="letters") as shown:
            async for letter in iter_dead_letters(settings.kafka_bootstrap_servers, names.pipeline, selection,
                                                  security=security, progress=shown):
                failed = letter.header(Header.FIRST_FAILURE_AT)
                when = datetime.fromtimestamp(int(failed) / 1000, UTC).isoformat(timespec="seconds") if failed else "?"
                shown.write(f"{letter.ref:>10}  {when}  {letter.header(Header.EVENT_ID)}  "
                            f"{letter.header(Header.ERROR_KIND)}  {letter.header(Header.ERROR_CLASS)}  "
                            f"status={letter.header(Header.ERROR_STATUS) or '-'}  "
                            f"connector={letter.header(Header.ERROR_CONNECTOR) or '-'}  "
                            f"{letter.header(Header.ERROR_MESSAGE)}")
                listed += 1
        return listed

    click.echo(f"{asyncio.run(go())} dead letters", err=True)


@dlq.command("show")
@pipeline_options
@click.argument("ref")
def dlq_show(app: str | None, config: str | None, ref: str) -> None:
    """Everything about one dead letter (REF is PARTITION:OFFSET): headers and decoded value."""
    from streams.dlq import DeadLetterFilter, read_dead_letters

    _, settings = load_pipeline_settings(app, config)
    letters = asyncio.run(read_dead_letters(settings.kafka_bootstrap_servers, pipeline_names(settings).pipeline,
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
@pipeline_options
@_selection_options
@click.option("--to", "target", default=None, help="Topic to replay to (default: the input topic).")
@click.option("--rate", default=100.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Records per second at most (any positive number, e.g. 0.5).")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; write nothing, create no topic.")
def dlq_replay(app: str | None, config: str | None, target: str | None, rate: float, dry_run: bool,
               **criteria: Any) -> None:
    """Produce the matching dead letters again, each exactly once across runs (even killed ones)."""
    from streams.dlq import ReplayFencedError, read_dead_letters, replay
    from streams.progress import progress

    _, settings = load_pipeline_settings(app, config)
    names = pipeline_names(settings)
    security = kafka_security_for(settings)

    async def go() -> Any:
        with progress("dlq replay: read", unit="letters") as shown:
            letters = await read_dead_letters(settings.kafka_bootstrap_servers, names.pipeline,
                                              _selection(**criteria), security=security, progress=shown)
        with progress(f"dlq replay to {target or names.input_topic}", unit="letters") as shown:
            return await replay(settings.kafka_bootstrap_servers, names.pipeline, letters,
                                target=target or names.input_topic, rate=rate, dry_run=dry_run, security=security,
                                progress=None if dry_run else shown, audit={"by": _operator(), "via": "cli"})

    try:
        report = asyncio.run(go())
    except (ReplayFencedError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    verb = "would replay" if dry_run else "replayed"
    count = len(report.refs) if dry_run else report.replayed
    click.echo(f"selected {report.selected}, {verb} {count} to {target or names.input_topic}, "
               f"skipped {report.skipped} replayed before")
    if dry_run:
        for ref in report.refs:
            click.echo(f"  {ref}")


def _operator() -> str:
    """Who runs this command, for the replay ledger: the login name, else the user id."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container's arbitrary user)
        return f"uid {os.getuid()}"


@main.command()
@pipeline_options
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1, or STREAMS_CONSOLE_HOST); any "
              "other than loopback needs STREAMS_CONSOLE_TOKEN_FILE or a user name and password.")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Port (default 8088, or STREAMS_CONSOLE_PORT; 0 picks a free one).")
def console(app: str | None, config: str | None, host: str | None, port: int | None) -> None:
    """Serve the operator console: workers, breakers, pauses, lag, dead letters and their redrive."""
    from streams.console.app import run_console
    from streams.console.settings import ConsoleSettings
    from streams.telemetry import configure_logging

    pipeline, settings = load_pipeline_settings(app, config)
    overrides = {name: value for name, value in (("host", host), ("port", port)) if value is not None}
    try:
        console_settings = ConsoleSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                 for err in exc.errors(include_input=False)]
        raise click.ClickException("invalid console settings:\n" + "\n".join(lines)) from None
    except SettingsError as exc:
        raise click.ClickException(f"invalid console settings:\n  {exc}") from None
    register_settings_secrets(console_settings)
    configure_logging(settings.log_level, json=settings.log_format == "json")
    kafka_security_for(settings)  # a clear error now rather than in the first page
    asyncio.run(run_console(settings, console_settings, serde=serde_for(settings), pipeline=pipeline))


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


@kafka.command("path")
def kafka_path() -> None:
    """Print the path of the broker script this install runs (it ships in the package)."""
    from streams.kafka.local import SCRIPT

    click.echo(SCRIPT)


@main.command()
@pipeline_options
@click.option("--sample", type=click.File("r"), default=None,
              help="A JSON file holding one input record (default: the pipeline's first sample event).")
def check(app: str | None, config: str | None, sample: Any) -> None:
    """Load the pipeline, check its steps, schemas and API settings, and run one event through it
    with the real APIs (nothing is read from or written to Kafka)."""
    pipeline, settings = load_pipeline_settings(app, config)
    click.echo(f"pipeline {pipeline.name}: {pipeline.source} -> {pipeline.sink} "
               f"({'ordered by record key' if pipeline.ordered else 'unordered'})")
    for line in pipeline.describe():
        click.echo(f"  step {line}")
    problems = _check_schemas(settings, pipeline)
    try:
        from streams.assembly import bind_pipeline

        bind_pipeline(pipeline, settings)
    except (ValueError, SettingsError) as exc:
        problems.append(f"APIs: {exc}")
    for api in pipeline.apis:
        if api.connector is not None:
            click.echo(f"  api {api.name}: {api.connector.settings.base_url}")
    if not problems:
        problems += asyncio.run(_check_sample(settings, pipeline, sample))
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} found")
    click.echo("OK")


def _check_schemas(settings: Settings, pipeline: Any) -> list[str]:
    """The pipeline's two subjects exist, and every subject's versions are compatible."""
    from streams.contracts import check_against_registry, check_schemas

    problems = []
    where = settings.schema_registry_url or (str(settings.schemas_dir) if settings.schemas_dir else None)
    if where is None:
        return ["schemas: the pipeline has no schema folder (a 'schemas' folder next to its module, "
                "schemas= in Pipeline, or STREAMS_SCHEMAS_DIR) and no STREAMS_SCHEMA_REGISTRY_URL"]
    try:
        registry = serde_for(settings).registry
    except click.ClickException as exc:
        return [f"schemas: {exc.message}"]
    for role, subject in (("input", pipeline.input_subject), ("output", pipeline.output_subject)):
        try:
            schema = registry.latest(subject)
            click.echo(f"  {role} schema {subject} v{schema.version} (id {schema.schema_id}) from {where}")
        except LookupError as exc:
            problems.append(f"schemas: {role} schema {subject!r} is not in {where}: {exc}")
    try:
        report = (check_against_registry(settings.schema_registry_url, settings.schemas_dir)
                  if settings.schema_registry_url and settings.schemas_dir else
                  check_schemas(settings.schemas_dir) if settings.schemas_dir else None)
    except (OSError, ValueError, LookupError) as exc:
        return [*problems, f"schemas: compatibility not checked: {exc}"]
    if report is not None:
        problems += [f"schemas: {problem}" for problem in report.problems]
        if report.ok:
            click.echo("  schemas compatible: " + "; ".join(report.notes))
    return problems


async def _check_sample(settings: Settings, pipeline: Any, sample: Any) -> list[str]:
    """One event through the steps with the real APIs; its output encoded with the output schema."""
    serde = serde_for(settings)
    if sample is not None:
        try:
            event = json.load(sample)
        except json.JSONDecodeError as exc:
            return [f"sample: {sample.name} is not JSON: {exc.msg} (line {exc.lineno})"]
    elif pipeline.sample_events is not None:
        event = pipeline.sample_events(1, 7)[0]
    else:
        click.echo("no sample event: pass --sample event.json to run one through the pipeline")
        return []
    try:  # as the worker would see it: encoded with the input schema, decoded again
        event = serde.decode(serde.encode(pipeline.input_subject, event), pipeline.input_subject)
    except (ValueError, LookupError) as exc:
        return [f"sample: does not fit the input schema {pipeline.input_subject}: {exc}"]
    from streams.assembly import know_output_fields

    know_output_fields(pipeline, serde)
    if pipeline.tables:
        click.echo(f"  (tables {', '.join(pipeline.tables)} are not loaded by check: their lookups miss)")
    for api in pipeline.apis:
        await api.start()
    try:
        outcome = await pipeline.run_one(event)
    finally:
        for api in pipeline.apis:
            await api.close()
    if outcome.failure is not None:
        failure = outcome.failure
        return [f"sample: the event would go to the {outcome.destination}: {failure.kind.value} "
                f"{failure.error_class}: {failure.message}"
                + (f" (api {failure.connector}" if failure.connector else "")
                + (f", status {failure.status})" if failure.status else ")" if failure.connector else "")]
    if outcome.output is None:
        click.echo("sample: filtered (the output builder returned None)")
        return []
    try:
        serde.encode(pipeline.output_subject, outcome.output)
    except (ValueError, LookupError) as exc:
        return [f"sample: the output does not fit the output schema {pipeline.output_subject}: {exc}"]
    click.echo("sample output: " + json.dumps(outcome.output, default=_json_default))
    for reason in outcome.degraded:
        click.echo(f"  degraded: {reason}")
    return []


@main.command()
@pipeline_options
@click.option("--partitions", default=8, show_default=True, help="Partitions of the input and output topics.")
def topics(app: str | None, config: str | None, partitions: int) -> None:
    """Create the pipeline's input, output and dead-letter topics if they do not exist."""
    from streams.kafka.clients import ensure_topics
    from streams.names import dlq_topic

    _, settings = load_pipeline_settings(app, config)
    names = pipeline_names(settings)
    wanted = {names.input_topic: partitions, names.output_topic: partitions, dlq_topic(names.pipeline): 1}
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
    from streams.demo import DEMO_APP, run_demo

    _, settings = load_pipeline_settings(DEMO_APP, None)
    sys.exit(asyncio.run(run_demo(settings, events)))


def _add_schema_commands() -> None:
    from streams.contracts import schemas

    main.add_command(schemas)


_add_schema_commands()

if __name__ == "__main__":
    main()
