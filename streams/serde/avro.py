"""Avro records to and from Confluent-framed bytes, with fastavro and a schema registry.

    serde = AvroSerde(EmbeddedRegistry.load())
    data = serde.encode("dev.streams.orders.OrderPlaced", record)
    record = serde.decode(data, reader_subject="dev.streams.orders.OrderPlaced")

Decoding resolves the writer's schema (named by the id in the frame) against the reader's
schema, so producers on older or newer compatible versions feed the same pipeline.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import fastavro

from streams.serde.registry import RegisteredSchema, SchemaRegistry
from streams.serde.wire import frame, unframe


class AvroDecodeError(ValueError):
    """The framed body is not a valid Avro encoding under its writer schema."""


class AvroEncodeError(ValueError):
    """A record does not match the schema it is written with."""


@dataclass(frozen=True, slots=True, eq=False)
class Decoded:
    """A decoded record with the Avro body it came from (``decode_with_source``)."""

    record: dict[str, Any]
    writer: RegisteredSchema
    body: bytes


class _Splice:
    """How to encode an output whose schema starts with every field of an input schema.

    Avro writes a record as its fields' encodings one after another, nothing between them. So
    when the output schema's first fields are exactly the input writer schema's fields (same
    names, same types, same order) and the record still holds the input's own values for them,
    the input's body *is* the encoding of those fields: only the rest has to be written.
    """

    __slots__ = ("prefix", "tail", "tail_names")

    def __init__(self, prefix: tuple[str, ...], tail: Any) -> None:
        self.prefix = prefix  # the shared fields' names
        self.tail = tail  # a parsed record schema of the output's remaining fields
        self.tail_names = tuple(field["name"] for field in tail["fields"])

    @classmethod
    def plan(cls, output: RegisteredSchema, source: RegisteredSchema) -> _Splice | None:
        out_fields, in_fields = output.definition.get("fields"), source.definition.get("fields")
        if not isinstance(out_fields, list) or not isinstance(in_fields, list) or len(out_fields) <= len(in_fields):
            return None
        # Compared after fastavro's parsing: names fully qualified, each named type expanded where
        # it is first defined, in both (the shared fields come first in both).
        out_parsed, in_parsed = output.parsed.get("fields", []), source.parsed.get("fields", [])
        for out_field, in_field in zip(out_parsed, in_parsed, strict=False):
            if out_field["name"] != in_field["name"] or _canonical(out_field["type"]) != _canonical(in_field["type"]):
                return None
        # Two records in the output's own namespace, so names inside the fields resolve as they
        # did there; the prefix's parse registers the named types the tail may refer to.
        named: dict[str, Any] = {}
        namespace = {"namespace": output.definition["namespace"]} if "namespace" in output.definition else {}
        shared = len(in_fields)
        try:
            fastavro.parse_schema({"type": "record", "name": "StreamsSplicePrefix", **namespace,
                                   "fields": out_fields[:shared]}, named_schemas=named)
            tail = fastavro.parse_schema({"type": "record", "name": "StreamsSpliceTail", **namespace,
                                          "fields": out_fields[shared:]}, named_schemas=named)
        except Exception:  # noqa: BLE001 - e.g. a field refers to the output record itself: encode in full
            return None
        return cls(tuple(field["name"] for field in in_fields), tail)


def _canonical(avro_type: Any) -> str:
    return json.dumps(avro_type, sort_keys=True, default=str)


_MISSING = object()


def _framed(schema: RegisteredSchema, parsed: Any, record: dict[str, Any], prefix: bytes = b"") -> bytes:
    """``prefix`` then ``record`` written with ``parsed``, framed with ``schema``'s id."""
    buffer = io.BytesIO()
    buffer.write(prefix)
    try:
        fastavro.schemaless_writer(buffer, parsed, record, strict_allow_default=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise AvroEncodeError(f"record does not match {schema.subject} v{schema.version}: {exc}") from exc
    return frame(schema.schema_id, buffer.getvalue())


class AvroSerde:
    """Encodes and decodes Avro records in the Confluent wire format."""

    __slots__ = ("_registry", "_splices")

    def __init__(self, registry: SchemaRegistry) -> None:
        self._registry = registry
        self._splices: dict[tuple[int, int], _Splice | None] = {}

    @property
    def registry(self) -> SchemaRegistry:
        return self._registry

    def encode(self, subject: str, record: dict[str, Any]) -> bytes:
        """Write ``record`` with the latest schema of ``subject``, framed with its id."""
        schema = self._registry.latest(subject)
        return self.encode_with(schema, record)

    def encode_based_on(self, subject: str, record: dict[str, Any], source: Decoded | None) -> bytes:
        """``encode``, reusing ``source``'s body for the fields the record kept from it.

        Applies when the latest ``subject`` schema starts with every field of the source's writer
        schema and ``record`` holds the source record's own objects for them (built with
        ``{**source.record, ...}``; never mutate a decoded record in place); else a full encode.
        The bytes are the same either way (tested); this only skips re-encoding the input.
        """
        schema = self._registry.latest(subject)
        if source is None:
            return self.encode_with(schema, record)
        key = (schema.schema_id, source.writer.schema_id)
        splice = self._splices.get(key, _MISSING)
        if splice is _MISSING:
            splice = self._splices[key] = _Splice.plan(schema, source.writer)
        if splice is None:
            return self.encode_with(schema, record)
        assert isinstance(splice, _Splice)
        kept = source.record
        for name in splice.prefix:
            if record.get(name, _MISSING) is not kept.get(name, _MISSING):
                return self.encode_with(schema, record)
        rest = {name: record[name] for name in splice.tail_names if name in record}
        if len(rest) + len(splice.prefix) != len(record):
            return self.encode_with(schema, record)  # fields the schema lacks: its error message
        return _framed(schema, splice.tail, rest, prefix=source.body)

    def encode_with(self, schema: RegisteredSchema, record: dict[str, Any]) -> bytes:
        return _framed(schema, schema.parsed, record)

    def decode(self, data: bytes | None, reader_subject: str | None = None) -> dict[str, Any]:
        """Read a framed record; resolve it to the latest ``reader_subject`` schema if given.

        Raises WireFormatError, UnknownSchemaError or AvroDecodeError, each with a message
        that says what was wrong with the bytes.
        """
        return self._decode(data, reader_subject)[0]

    def decode_with_source(self, data: bytes | None, reader_subject: str | None = None) -> tuple[
            dict[str, Any], Decoded | None]:
        """``decode``, plus the body it came from when that body encodes exactly the record (no
        schema resolution happened): what ``encode_based_on`` needs."""
        record, writer, body, resolved = self._decode(data, reader_subject)
        return record, (None if resolved else Decoded(record, writer, bytes(body)))

    def _decode(self, data: bytes | None, reader_subject: str | None) -> tuple[
            dict[str, Any], RegisteredSchema, memoryview, bool]:
        schema_id, body = unframe(data)
        writer = self._registry.by_id(schema_id)
        reader = self._registry.latest(reader_subject) if reader_subject else None
        if reader is not None and reader.schema_id == writer.schema_id:
            reader = None  # same schema: skip resolution
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(
                stream, writer.parsed, reader.parsed if reader is not None else None
            )
        except fastavro.read.SchemaResolutionError:
            raise AvroDecodeError(
                f"writer schema {writer.subject} v{writer.version} (id {schema_id}) cannot be resolved "
                f"to the reader schema {reader_subject}"
            ) from None
        except EOFError:
            raise AvroDecodeError(
                f"Avro body of {len(body)} bytes is truncated for {writer.subject} "
                f"v{writer.version} (schema id {schema_id})"
            ) from None
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, OverflowError,
                MemoryError) as exc:
            raise AvroDecodeError(
                f"Avro body does not decode as {writer.subject} v{writer.version} "
                f"(schema id {schema_id}): {type(exc).__name__}: {exc}"
            ) from exc
        trailing = len(body) - stream.tell()
        if trailing:
            raise AvroDecodeError(
                f"{trailing} bytes left over after decoding {writer.subject} v{writer.version} "
                f"(schema id {schema_id}); the body does not match its schema"
            )
        if not isinstance(record, dict):
            raise AvroDecodeError(f"schema id {schema_id} does not describe a record")
        return record, writer, body, reader is not None
