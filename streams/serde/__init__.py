"""Avro serialization in the Confluent wire format, and the schema registries behind it."""

from streams.serde.avro import AvroSerde
from streams.serde.registry import EmbeddedRegistry, SchemaRegistry, UnknownSchemaError
from streams.serde.wire import WireFormatError, frame, unframe

__all__ = [
    "AvroSerde",
    "EmbeddedRegistry",
    "SchemaRegistry",
    "UnknownSchemaError",
    "WireFormatError",
    "frame",
    "unframe",
]
