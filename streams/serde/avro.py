"""Avro records to and from Confluent-framed bytes, with fastavro and a schema registry.

    serde = AvroSerde(EmbeddedRegistry.load())
    data = serde.encode("dev.streams.orders.OrderPlaced", record)
    record = serde.decode(data, reader_subject="dev.streams.orders.OrderPlaced")

Decoding resolves the writer's schema (named by the id in the frame) against the reader's
schema, so producers on older or newer compatible versions feed the same pipeline.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

from streams.serde.registry import RegisteredSchema, SchemaRegistry
from streams.serde.wire import frame, unframe


class AvroDecodeError(ValueError):
    """The framed body is not a valid Avro encoding under its writer schema."""


class AvroEncodeError(ValueError):
    """A record does not match the schema it is written with."""


class AvroSerde:
    """Encodes and decodes Avro records in the Confluent wire format."""

    __slots__ = ("_registry",)

    def __init__(self, registry: SchemaRegistry) -> None:
        self._registry = registry

    @property
    def registry(self) -> SchemaRegistry:
        return self._registry

    def encode(self, subject: str, record: dict[str, Any]) -> bytes:
        """Write ``record`` with the latest schema of ``subject``, framed with its id."""
        schema = self._registry.latest(subject)
        return self.encode_with(schema, record)

    def encode_with(self, schema: RegisteredSchema, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        try:
            fastavro.schemaless_writer(buffer, schema.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise AvroEncodeError(
                f"record does not match {schema.subject} v{schema.version}: {exc}"
            ) from exc
        return frame(schema.schema_id, buffer.getvalue())

    def decode(self, data: bytes | None, reader_subject: str | None = None) -> dict[str, Any]:
        """Read a framed record; resolve it to the latest ``reader_subject`` schema if given.

        Raises WireFormatError, UnknownSchemaError or AvroDecodeError, each with a message
        that says what was wrong with the bytes.
        """
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
        return record
