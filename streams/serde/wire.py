"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body.

Any Confluent-compatible client reads and writes this framing, so our topics stay readable
by tools that are not ours.
"""

from __future__ import annotations

import struct

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size  # 5 bytes


class WireFormatError(ValueError):
    """The bytes are not a Confluent-framed record."""


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the magic byte and its schema id."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes | None) -> tuple[int, memoryview]:
    """Split a framed record into (schema id, Avro body) without copying the body."""
    if data is None:
        raise WireFormatError("record has no value (tombstone); expected a Confluent-framed Avro record")
    if len(data) < HEADER_SIZE:
        raise WireFormatError(
            f"record is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte Confluent header"
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise WireFormatError(f"magic byte is {magic & 0xFF:#04x}, expected 0x00 (Confluent wire format)")
    return schema_id, memoryview(data)[HEADER_SIZE:]
