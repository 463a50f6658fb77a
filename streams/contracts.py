"""The compatibility gate: may each subject's versions in ``schemas/`` follow one another?

    streams schemas check                        # schemas/ against its own history
    streams schemas check --registry-url URL     # ... and against what that registry holds
    streams schemas push --registry-url URL      # register schemas/ in a Schema Registry
    python -m streams.contracts check            # the same, without the CLI

Each subject has a level in ``schemas/registry.json`` (BACKWARD when it names none):

| level                 | every new version v(n) must                                      |
|-----------------------|------------------------------------------------------------------|
| BACKWARD              | read data written with v(n-1)                                    |
| BACKWARD_TRANSITIVE   | read data written with every earlier version                     |
| FORWARD               | be readable by v(n-1)                                            |
| FORWARD_TRANSITIVE    | be readable by every earlier version                             |
| FULL / FULL_TRANSITIVE| both, with v(n-1) / with every earlier version                   |
| NONE                  | nothing                                                          |

Whether a reader schema can read a writer schema's data is decided by the ``avro`` package's
``ReaderWriterCompatibilityChecker`` (a port of the Java implementation that Schema Registries
use), not by rules of our own. In registry mode the registry's compatibility endpoint is asked
too, for each version it does not hold yet.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
import click
import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityResult, SchemaCompatibilityType

from streams.serde.registry import DEFAULT_SCHEMAS_DIR, EmbeddedRegistry, RegisteredSchema

COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)

_REASONS = {
    "reader_field_missing_default_value": "the reader has this field without a default, and the writer's data lacks it",
    "type_mismatch": "the types cannot be resolved",
    "name_mismatch": "the named type's name differs (and no alias matches)",
    "missing_union_branch": "the reader's union lacks a branch the writer may write",
    "missing_enum_symbols": "the writer has enum symbols the reader lacks (and no enum default)",
    "fixed_size_mismatch": "the fixed sizes differ",
}


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One way in which a version of a subject breaks its compatibility level."""

    subject: str
    version: int  # the version being added
    other_version: int  # the earlier version it was checked against
    level: str
    reader_version: int
    writer_version: int
    field: str  # dotted path in the reader, e.g. "items[].quantity"; "" for the record itself
    location: str  # JSON-pointer-like path the avro checker reports, e.g. /fields/8/type/items/fields/1
    reason: str

    def __str__(self) -> str:
        where = f"field {self.field!r} ({self.location})" if self.field else f"at {self.location or '/'}"
        return (
            f"{self.subject}: v{self.version} breaks {self.level} with v{self.other_version}: "
            f"v{self.reader_version} cannot read data written with v{self.writer_version}: {where}: {self.reason}"
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that fails the check but is not a reader/writer pair (unparsable, unknown level, registry)."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


@dataclass
class CheckReport:
    """What a check found: ``problems`` fail it, ``notes`` say what was checked."""

    problems: list[Incompatibility | Problem]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------ local check ---


def check_schemas(directory: Path | str | None = None) -> CheckReport:
    """Check every subject of ``directory`` (default: the repository's ``schemas/``) at its level."""
    root = Path(directory) if directory is not None else DEFAULT_SCHEMAS_DIR
    report = CheckReport([], [])
    if root is None:
        report.problems.append(Problem("schemas", "no schema folder given: pass --schemas-dir or set "
                                                  "STREAMS_SCHEMAS_DIR"))
        return report
    try:
        registry = EmbeddedRegistry.load(root)
    except Exception as exc:  # noqa: BLE001 - any load failure is the check's finding, reported as such
        report.problems.extend(_load_problems(root) or [
            Problem(str(root), f"cannot load the schemas: {type(exc).__name__}: {exc}")])
        return report
    for subject in registry.subjects():
        level = registry.compatibility(subject)
        versions = registry.versions(subject)
        found = check_subject(subject, versions, level)
        report.problems.extend(found)
        if not found:
            numbers = ", ".join(f"v{s.version}" for s in versions)
            report.notes.append(f"{subject}: {numbers} {level}: compatible")
    return report


def _load_problems(root: Path) -> list[Incompatibility | Problem]:
    """Which version files of ``root`` do not read or parse, each named (when loading them all failed)."""
    problems: list[Incompatibility | Problem] = []
    try:
        index = json.loads((root / "registry.json").read_text(encoding="utf-8"))
        subjects = index["subjects"].items()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [Problem(str(root / "registry.json"), f"cannot read the index: {type(exc).__name__}: {exc}")]
    for subject, entry in subjects:
        for version in entry.get("versions", {}):
            path = root / str(entry.get("directory", "?")) / f"v{version}.avsc"
            try:
                fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas={})
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                reason = f"{type(exc).__name__}: {exc}"
                problems.append(Problem(subject, f"v{version} ({path.name}) does not load: {reason}"))
    return problems


def check_subject(subject: str, versions: list[RegisteredSchema], level: str) -> list[Incompatibility | Problem]:
    """Check the versions of one subject, oldest first, at ``level``."""
    if level not in COMPATIBILITY_LEVELS:
        known = ", ".join(COMPATIBILITY_LEVELS)
        return [Problem(subject, f"unknown compatibility level {level!r}; use one of {known}")]
    parsed: dict[int, avro.schema.Schema] = {}
    problems: list[Incompatibility | Problem] = []
    for schema in versions:
        try:
            parsed[schema.version] = avro.schema.parse(json.dumps(schema.definition))
        except Exception as exc:  # noqa: BLE001 - the avro package raises several kinds
            problems.append(Problem(subject, f"v{schema.version} is not a valid Avro schema: {exc}"))
    if problems or level == "NONE":
        return problems
    definitions = {s.version: s.definition for s in versions}
    numbers = sorted(parsed)
    for index, new in enumerate(numbers[1:], start=1):
        earlier = numbers[:index] if level.endswith("_TRANSITIVE") else [numbers[index - 1]]
        for old in earlier:
            pairs: list[tuple[int, int]] = []  # (reader, writer)
            if level.startswith(("BACKWARD", "FULL")):
                pairs.append((new, old))
            if level.startswith(("FORWARD", "FULL")):
                pairs.append((old, new))
            for reader, writer in pairs:
                problems.extend(
                    Incompatibility(subject, new, old, level, reader, writer, field, location, reason)
                    for field, location, reason in _incompatibilities(
                        parsed[reader], parsed[writer], definitions[reader]
                    )
                )
    return problems


def _incompatibilities(reader: avro.schema.Schema, writer: avro.schema.Schema,
                       reader_definition: Any) -> list[tuple[str, str, str]]:
    """(field, location, reason) for each thing that stops ``reader`` reading ``writer``'s data.

    The checker merges what it finds into one result whose messages and locations are sets,
    so two problems in one pair no longer say which reason belongs where. When there are
    several, each field of the reader record is checked alone (the checker looks at reader
    fields one by one anyway), which pairs them up again; what still holds several problems
    (one field with two) is reported with all its locations and reasons together.
    """
    result = _check(reader, writer)
    if result is None:
        return []
    if len(result.incompatibilities) > 1 and isinstance(reader_definition, dict) and reader_definition.get("fields"):
        found: list[tuple[str, str, str]] = []
        for index, field in enumerate(reader_definition["fields"]):
            try:  # the record with this one field; fails if it uses a type another field defines
                alone = avro.schema.parse(json.dumps({**reader_definition, "fields": [field]}))
            except Exception:  # noqa: BLE001 - fall back to the merged report
                found = []
                break
            partial = _check(alone, writer)
            if partial is not None:
                found.append(_reported(partial, reader_definition, f"/fields/{index}", "/fields/0"))
        if found:
            return found
    return [_reported(result, reader_definition)]


def _check(reader: avro.schema.Schema, writer: avro.schema.Schema) -> SchemaCompatibilityResult | None:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)  # type: ignore[no-untyped-call]
    return result if result.compatibility is SchemaCompatibilityType.incompatible else None


def _reported(result: SchemaCompatibilityResult, reader_definition: Any, prefix: str = "",
              alone_prefix: str = "") -> tuple[str, str, str]:
    """One (field, location, reason); ``alone_prefix`` locations are re-rooted at ``prefix``."""
    locations = []
    for location in sorted(loc for loc in result.locations if loc not in ("", "/")):
        if alone_prefix and (location == alone_prefix or location.startswith(alone_prefix + "/")):
            location = prefix + location[len(alone_prefix):]
        locations.append(location)
    kinds = list(dict.fromkeys(kind.value for kind in result.incompatibilities))
    messages = sorted(result.messages)
    if len(result.incompatibilities) == 1:
        reason = _describe(kinds[0], messages[0] if messages else "")
    else:
        reason = f"{'; '.join(_REASONS.get(k, k) for k in kinds)} ({'; '.join(messages)})"
    fields = ", ".join(dict.fromkeys(f for f in (_field_path(reader_definition, loc) for loc in locations) if f))
    return fields, ", ".join(locations) or "/", reason


def _describe(kind: str, message: str) -> str:
    if kind == "reader_field_missing_default_value":
        return f"{_REASONS[kind]} (add a default, or keep the field)"
    return f"{_REASONS.get(kind, kind)}: {message}"


def _field_path(definition: Any, location: str) -> str:
    """``/fields/8/type/items/fields/1/type`` in the reader as ``items[].quantity``."""
    names = dict(_named_types(definition))
    node: Any = definition
    path: list[str] = []
    tokens = [t for t in location.split("/") if t]
    i = 0
    while i < len(tokens):
        node = _resolve(node, names)
        token = tokens[i]
        if token == "fields" and i + 1 < len(tokens) and isinstance(node, dict) and "fields" in node:
            try:
                field = node["fields"][int(tokens[i + 1])]
            except (ValueError, IndexError):
                break
            path.append(str(field.get("name", "?")))
            node = field
            i += 2
            continue
        if token == "type" and isinstance(node, dict) and "type" in node:
            node = node["type"]
        elif token == "items" and isinstance(node, dict) and "items" in node:
            node = node["items"]
            if path:
                path[-1] += "[]"
        elif token == "values" and isinstance(node, dict) and "values" in node:
            node = node["values"]
            if path:
                path[-1] += "{}"
        else:
            break
        i += 1
    return ".".join(path)


def _named_types(definition: Any, namespace: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named type defined in a schema, by full and by short name."""
    if isinstance(definition, list):
        for branch in definition:
            yield from _named_types(branch, namespace)
        return
    if not isinstance(definition, dict):
        return
    if definition.get("type") in ("record", "error", "enum", "fixed") and "name" in definition:
        name = str(definition["name"])
        namespace = str(definition.get("namespace", namespace)) if "." not in name else name.rpartition(".")[0]
        full = name if "." in name else (f"{namespace}.{name}" if namespace else name)
        yield full, definition
        yield full.rpartition(".")[2], definition
    for field in definition.get("fields", []) or []:
        if isinstance(field, dict):
            yield from _named_types(field.get("type"), namespace)
    for key in ("items", "values"):
        if key in definition:
            yield from _named_types(definition[key], namespace)
    if isinstance(definition.get("type"), dict | list):
        yield from _named_types(definition["type"], namespace)


def _resolve(node: Any, names: dict[str, dict[str, Any]]) -> Any:
    if isinstance(node, str) and node in names:
        return names[node]
    if isinstance(node, dict) and isinstance(node.get("type"), dict) and "fields" not in node and "name" not in node:
        return node["type"]
    return node


# --------------------------------------------------------------- registry check ---


def check_against_registry(url: str, directory: Path | str | None = None) -> CheckReport:
    """Ask the registry at ``url`` about each version of ``directory`` that it does not hold yet."""
    from streams.serde.confluent import ConfluentRegistry, RegistryUnavailableError, SchemaRegistryError

    report = CheckReport([], [])
    source = EmbeddedRegistry.load(directory)
    registry = ConfluentRegistry(url)
    try:
        for subject in source.subjects():
            wanted = source.compatibility(subject)
            level = registry.compatibility(subject)
            if level != wanted:
                report.notes.append(f"{subject}: the registry applies {level}, registry.json says {wanted}")
            for schema in source.versions(subject):
                held = registry.lookup(subject, schema.definition)
                if held is not None:
                    report.notes.append(f"{subject}: v{schema.version} is registered "
                                        f"(registry version {held.version}, id {held.schema_id})")
                    continue
                verdict = registry.check_compatibility(subject, schema.definition)
                if verdict.compatible:
                    report.notes.append(f"{subject}: v{schema.version} is not registered yet; the registry accepts it")
                else:
                    said = f": {'; '.join(verdict.messages)}" if verdict.messages else ""
                    report.problems.append(Problem(
                        subject,
                        f"v{schema.version}: the registry at {registry.url} says it is not {level} compatible "
                        f"with the subject's latest registered version{said}",
                    ))
    except (RegistryUnavailableError, SchemaRegistryError) as exc:
        report.problems.append(Problem("registry", str(exc)))
    finally:
        registry.close()
    return report


# ---------------------------------------------------------------------- commands ---


schemas = click.Group("schemas", help="Check and publish the Avro contracts in schemas/.")

_schemas_dir_option = click.option(
    "--schemas-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_SCHEMAS_DIR,
    show_default="STREAMS_SCHEMAS_DIR, else the source checkout's schemas/",
    help="Folder with registry.json and one folder of versions per subject.",
)


@schemas.command("check")
@_schemas_dir_option
@click.option(
    "--registry-url",
    envvar="STREAMS_SCHEMA_REGISTRY_URL",
    default=None,
    help="Also ask this Confluent-compatible registry (env STREAMS_SCHEMA_REGISTRY_URL).",
)
def check_command(schemas_dir: Path, registry_url: str | None) -> None:
    """Exit non-zero if a subject's versions break its compatibility level."""
    reports = [check_schemas(schemas_dir)]
    if registry_url:
        reports.append(check_against_registry(registry_url, schemas_dir))
    problems = [p for r in reports for p in r.problems]
    for report in reports:
        for note in report.notes:
            click.echo(f"ok    {note}")
    for problem in problems:
        click.echo(f"FAIL  {problem}", err=True)
    if problems:
        click.echo(f"schemas check: {len(problems)} incompatible change(s) or problem(s)", err=True)
        sys.exit(1)
    click.echo("schemas check: every subject follows its compatibility level")


@schemas.command("push")
@_schemas_dir_option
@click.option("--registry-url", envvar="STREAMS_SCHEMA_REGISTRY_URL", required=True,
              help="The Confluent-compatible registry (env STREAMS_SCHEMA_REGISTRY_URL).")
@click.option("--set-compatibility/--keep-compatibility", default=True, show_default=True,
              help="Give each subject the level registry.json names before registering.")
def push_command(schemas_dir: Path, registry_url: str, set_compatibility: bool) -> None:
    """Register every version in schemas/, oldest first, in a Schema Registry."""
    from streams.serde.confluent import ConfluentRegistry, RegistryUnavailableError, SchemaRegistryError
    from streams.serde.factory import push_schemas

    registry = ConfluentRegistry(registry_url)
    try:
        pushed = push_schemas(registry, EmbeddedRegistry.load(schemas_dir), set_compatibility=set_compatibility)
    except (RegistryUnavailableError, SchemaRegistryError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        registry.close()
    for p in pushed:
        click.echo(f"{p.subject} v{p.version}: id {p.registry_id} in the registry (pinned id {p.embedded_id})")


if __name__ == "__main__":
    schemas(prog_name="python -m streams.contracts")
