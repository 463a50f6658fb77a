"""Schema registries: where a schema id comes from and what it means.

``SchemaRegistry`` is the interface the serde uses. ``EmbeddedRegistry`` is the default: it
reads ``schemas/`` and ``schemas/registry.json``, where each version's id is pinned and
committed, so ids never depend on the order anything was registered in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import fastavro

SCHEMAS_DIR_VARIABLE = "STREAMS_SCHEMAS_DIR"


def default_schemas_dir() -> Path | None:
    """Where the schemas are when no folder is given: ``$STREAMS_SCHEMAS_DIR``, else the source
    checkout's ``schemas/`` when the package runs from one (pyproject.toml two folders up), else None:
    an installed package carries no schemas, and its site-packages is no place to look for them."""
    if configured := os.environ.get(SCHEMAS_DIR_VARIABLE):
        return Path(configured)
    checkout = Path(__file__).resolve().parents[2]
    return checkout / "schemas" if (checkout / "pyproject.toml").is_file() else None


DEFAULT_SCHEMAS_DIR = default_schemas_dir()


class UnknownSchemaError(LookupError):
    """A schema id or subject that the registry does not know."""


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One version of a subject, parsed once and shared."""

    subject: str
    version: int
    schema_id: int
    parsed: Any  # fastavro's parsed schema
    definition: dict[str, Any]


class SchemaRegistry(Protocol):
    """What the serializer needs from a registry."""

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema with this id; raises UnknownSchemaError."""
        ...

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version of a subject; raises UnknownSchemaError."""
        ...


class EmbeddedRegistry:
    """A read-only registry over the committed ``schemas/`` folder.

        registry = EmbeddedRegistry.load()
        schema = registry.latest("dev.streams.orders.OrderPlaced")
        same = registry.by_id(schema.schema_id)

    ``registry.json`` maps each subject to its folder, its compatibility level and its
    versions' pinned ids; ``<folder>/v<version>.avsc`` holds each version.
    """

    __slots__ = ("_by_id", "_compatibility", "_latest", "_versions")

    def __init__(self, schemas: list[RegisteredSchema], compatibility: dict[str, str]) -> None:
        self._by_id: dict[int, RegisteredSchema] = {}
        self._versions: dict[str, dict[int, RegisteredSchema]] = {}
        for schema in schemas:
            if schema.schema_id in self._by_id:
                other = self._by_id[schema.schema_id]
                raise ValueError(
                    f"schema id {schema.schema_id} is pinned twice: {other.subject} "
                    f"v{other.version} and {schema.subject} v{schema.version}"
                )
            self._by_id[schema.schema_id] = schema
            self._versions.setdefault(schema.subject, {})[schema.version] = schema
        self._latest = {
            subject: versions[max(versions)] for subject, versions in self._versions.items()
        }
        self._compatibility = dict(compatibility)

    @classmethod
    def load(cls, directory: Path | str | None = None) -> EmbeddedRegistry:
        """Read and parse every pinned schema under ``directory`` (default: ``default_schemas_dir()``,
        the checkout's schemas/ or ``$STREAMS_SCHEMAS_DIR``)."""
        if directory is None:
            directory = default_schemas_dir()
            if directory is None:
                raise UnknownSchemaError(
                    f"no schema folder given: set {SCHEMAS_DIR_VARIABLE} or pass a schemas folder "
                    "(an installed streams package has no schemas/ of its own)"
                )
        root = Path(directory)
        index_path = root / "registry.json"
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UnknownSchemaError(f"no schema index at {index_path}") from None
        schemas: list[RegisteredSchema] = []
        compatibility: dict[str, str] = {}
        for subject, entry in index["subjects"].items():
            compatibility[subject] = entry.get("compatibility", "BACKWARD")
            for version_text, schema_id in entry["versions"].items():
                version = int(version_text)
                path = root / entry["directory"] / f"v{version}.avsc"
                definition = json.loads(path.read_text(encoding="utf-8"))
                parsed = fastavro.parse_schema(definition, named_schemas={})
                schemas.append(RegisteredSchema(subject, version, int(schema_id), parsed, definition))
        return cls(schemas, compatibility)

    def by_id(self, schema_id: int) -> RegisteredSchema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaError(f"schema id {schema_id} is not registered") from None

    def latest(self, subject: str) -> RegisteredSchema:
        try:
            return self._latest[subject]
        except KeyError:
            raise UnknownSchemaError(f"subject {subject!r} is not registered") from None

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """All versions of a subject, oldest first."""
        try:
            versions = self._versions[subject]
        except KeyError:
            raise UnknownSchemaError(f"subject {subject!r} is not registered") from None
        return [versions[v] for v in sorted(versions)]

    def subjects(self) -> list[str]:
        return sorted(self._versions)

    def compatibility(self, subject: str) -> str:
        return self._compatibility.get(subject, "BACKWARD")
