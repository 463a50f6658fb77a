"""Which registry a process uses, and how a Schema Registry gets the schemas of ``schemas/``.

    registry = registry_from_url(settings.schema_registry_url)    # None: the embedded one
    registry = registry_from_url(url, push_embedded=True)          # and register schemas/ there

In registry mode the Schema Registry says what an id means (the writer's schema of each
record), but the pipeline reads and writes with its own schemas, the newest versions in
``schemas/``, under the ids the registry gave them (``PinnedRegistry``). A version someone
registers later does not change what a running pipeline reads or writes until it is
deployed with that version; the pipeline's code is written for its own schemas.

The two modes do not mix on one topic: the embedded registry's ids are pinned in
``schemas/registry.json``, a Schema Registry hands out its own. In registry mode every producer
and consumer of a topic asks the same registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from streams.serde.confluent import ConfluentRegistry
from streams.serde.registry import EmbeddedRegistry, RegisteredSchema, SchemaRegistry, UnknownSchemaError

log = logging.getLogger("streams.serde.registry")


@dataclass(frozen=True, slots=True)
class PushedSchema:
    """One version of ``schemas/`` as the Schema Registry now knows it."""

    subject: str
    version: int  # the version in schemas/
    embedded_id: int  # its id pinned in schemas/registry.json
    registry_id: int  # its id in the Schema Registry


class PinnedRegistry:
    """Registry mode for a pipeline: ids resolved by the Schema Registry, ``latest`` pinned to our own schemas.

        registry = PinnedRegistry(ConfluentRegistry(url), EmbeddedRegistry.load())
        registry.by_id(schema_id)      # whatever the registry says the id is
        registry.latest(ORDER_PLACED)  # our newest OrderPlaced, with the registry's id for it

    ``latest`` looks our version up in the registry by content once per subject and keeps the
    answer (an id never changes meaning). A subject ``schemas/`` does not have falls back to
    the registry's own latest version.
    """

    __slots__ = ("_own", "_own_subjects", "_pinned", "_remote")

    def __init__(self, remote: ConfluentRegistry, own: EmbeddedRegistry) -> None:
        self._remote = remote
        self._own = own
        self._own_subjects = frozenset(own.subjects())
        self._pinned: dict[str, RegisteredSchema] = {}

    @property
    def remote(self) -> ConfluentRegistry:
        return self._remote

    def by_id(self, schema_id: int) -> RegisteredSchema:
        return self._remote.by_id(schema_id)

    def latest(self, subject: str) -> RegisteredSchema:
        pinned = self._pinned.get(subject)
        if pinned is not None:
            return pinned
        if subject not in self._own_subjects:
            return self._remote.latest(subject)
        mine = self._own.latest(subject)
        held = self._remote.lookup(subject, mine.definition)
        if held is None:
            raise UnknownSchemaError(
                f"{subject} v{mine.version} of schemas/ is not registered in {self._remote.url} "
                f"(register it with `streams schemas push`)"
            )
        self._pinned[subject] = held
        return held

    def close(self) -> None:
        self._remote.close()


def registry_from_url(
    url: str | None,
    *,
    push_embedded: bool = False,
    schemas_dir: Path | str | None = None,
    timeout: float = 5.0,
) -> SchemaRegistry:
    """The embedded registry when ``url`` is None or blank, else registry mode against the registry at ``url``.

    In registry mode (a ``PinnedRegistry``) ids come from the registry and ``latest`` is our
    own newest version of each subject in ``schemas_dir`` (default: the repository's
    ``schemas/``). ``push_embedded`` registers every version of ``schemas_dir`` there first,
    so a registry-mode run has our schemas.
    """
    if url is None or not url.strip():
        return EmbeddedRegistry.load(schemas_dir)
    remote = ConfluentRegistry(url, timeout=timeout)
    if schemas_dir is None and not push_embedded:
        return remote  # a pipeline without a schema folder reads and writes the registry's latest versions
    own = EmbeddedRegistry.load(schemas_dir)
    if push_embedded:
        push_schemas(remote, own)
    return PinnedRegistry(remote, own)


def push_schemas(
    target: ConfluentRegistry, source: EmbeddedRegistry | None = None, *, set_compatibility: bool = True
) -> list[PushedSchema]:
    """Register each subject's versions of ``source`` in ``target``, oldest first.

    With ``set_compatibility`` each subject first gets the level ``registry.json`` gives it, so
    the registry itself refuses a later incompatible version. Versions already registered
    are answered with their existing ids, so pushing twice changes nothing. Raises
    ``IncompatibleSchemaError`` if the registry holds something the versions do not follow.
    """
    source = source if source is not None else EmbeddedRegistry.load()
    pushed: list[PushedSchema] = []
    for subject in source.subjects():
        if set_compatibility:
            target.set_compatibility(subject, source.compatibility(subject))
        for schema in source.versions(subject):
            registry_id = target.register(subject, schema.definition)
            pushed.append(PushedSchema(subject, schema.version, schema.schema_id, registry_id))
            log.info("schema %s v%d (pinned id %d) is id %d in %s", subject, schema.version, schema.schema_id,
                     registry_id, target.url)
    return pushed
