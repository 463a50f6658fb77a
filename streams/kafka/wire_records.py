"""Fetched record batches that survive header names which are not UTF-8.

    from streams.kafka.wire_records import install
    install()        # once per process, before consumers fetch (streams.kafka does it on import)

aiokafka decodes each record header's name strictly as UTF-8 while it parses a fetched batch,
in its C and Python parsers alike. A name that is not UTF-8 raises ``UnicodeDecodeError`` out
of every ``getmany()`` that reaches the record, the valid records fetched with it are withheld,
and the consumer never moves past it: one producer's header stops every worker of the group for
good. Kafka declares header names UTF-8 but brokers do not check them, so such records exist
(``kcat -H $'x-bad-\\xff=v'`` writes one; docs/wire-records.md has the reproduction).

Batches keep going through aiokafka's own (C) parser. Only when it fails on a header name is
that one batch parsed again by the small v2 reader below, which decodes names with
``surrogateescape``: a name's original bytes stay recoverable, and the engine dead-letters the
record as poison (``streams.engine.records.malformed_header_names``).

The one seam into aiokafka is the fetcher module's ``MemoryRecords`` name, which ``install``
points at ``TolerantMemoryRecords``; aiokafka offers no public hook for record parsing.
``tests/integration/test_wire_records.py`` reads kcat's record through a plain aiokafka
consumer, so a release that moves the seam fails the suite instead of the workers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiokafka.codec as codec
import aiokafka.consumer.fetcher as fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords

# Record batch v2 (KIP-98): base offset, length, leader epoch, magic, CRC, attributes, last
# offset delta, first and max timestamps, producer id and epoch, base sequence, record count.
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_LENGTH = struct.Struct(">i")
_LENGTH_AT = 8  # the batch length follows the base offset
_MAGIC_AT = 16
_LOG_APPEND_TIME = 1

_DECOMPRESS: dict[int, Callable[[bytes], bytes]] = {
    1: codec.gzip_decode,
    2: codec.snappy_decode,
    3: codec.lz4_decode,
    4: codec.zstd_decode,
}


@dataclass(slots=True, frozen=True)
class WireRecord:
    """One record of a batch, with the attributes aiokafka's fetcher reads from its own."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


def read_batch(raw: bytes | memoryview) -> Iterator[WireRecord]:
    """The records of one v2 record batch; header names that are not UTF-8 keep their bytes as
    lone surrogates (``surrogateescape``)."""
    (base_offset, _length, _epoch, magic, _crc, attributes, _last_delta, first_timestamp, max_timestamp,
     _producer_id, _producer_epoch, _base_sequence, count) = _BATCH_HEADER.unpack_from(raw)
    if magic != 2:
        raise CorruptRecordException(f"record batch magic {magic}, expected 2")
    body = bytes(raw[_BATCH_HEADER.size:])
    compression = attributes & 0x07
    if compression:
        if compression not in _DECOMPRESS:
            raise CorruptRecordException(f"unknown compression codec {compression}")
        body = _DECOMPRESS[compression](body)
    timestamp_type = 1 if attributes & 0x08 else 0
    pos = 0
    for _ in range(count):
        length, pos = _varint(body, pos)
        end = pos + length
        pos += 1  # record attributes: unused
        timestamp_delta, pos = _varint(body, pos)
        offset_delta, pos = _varint(body, pos)
        key, pos = _bytes(body, pos)
        value, pos = _bytes(body, pos)
        header_count, pos = _varint(body, pos)
        if header_count < 0:
            raise CorruptRecordException(f"record has {header_count} headers")
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(header_count):
            name, pos = _bytes(body, pos)
            if name is None:
                raise CorruptRecordException("record header has no name")
            header_value, pos = _bytes(body, pos)
            headers.append((name.decode("utf-8", "surrogateescape"), header_value))
        if pos != end:
            raise CorruptRecordException(f"record is {length} bytes, its fields take {pos - end + length}")
        timestamp = max_timestamp if timestamp_type == _LOG_APPEND_TIME else first_timestamp + timestamp_delta
        yield WireRecord(base_offset + offset_delta, timestamp, timestamp_type, key, value, headers)


def _varint(buffer: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint (protobuf style, as Kafka writes them) at ``pos``; the value and the next position."""
    result = shift = 0
    while True:
        if pos >= len(buffer):
            raise CorruptRecordException("record batch ends inside a varint")
        byte = buffer[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordException("varint longer than 10 bytes")


def _bytes(buffer: bytes, pos: int) -> tuple[bytes | None, int]:
    """A varint length (-1: null) and that many bytes."""
    length, pos = _varint(buffer, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buffer):
        raise CorruptRecordException("record field runs past the end of its batch")
    return buffer[pos:pos + length], pos + length


class _TolerantBatch:
    """aiokafka's parsed batch, read again by ``read_batch`` if a header name is not UTF-8."""

    __slots__ = ("_batch", "_raw", "_records")

    def __init__(self, batch: Any, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw
        self._records: Iterator[Any] | None = None

    def __getattr__(self, name: str) -> Any:  # base_offset, next_offset, validate_crc, ...: the batch's own
        return getattr(self._batch, name)

    def __iter__(self) -> _TolerantBatch:
        return self

    def __next__(self) -> Any:
        if self._records is None:
            self._records = self._read()
        return next(self._records)

    def _read(self) -> Iterator[Any]:
        last = -1
        try:
            for record in self._batch:
                last = record.offset
                yield record
        except UnicodeDecodeError:
            for record in read_batch(self._raw):
                if record.offset > last:
                    yield record


class TolerantMemoryRecords:
    """aiokafka's ``MemoryRecords`` (it frames and parses), with v2 batches wrapped in ``_TolerantBatch``."""

    __slots__ = ("_data", "_pos", "_records")

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = memoryview(data)
        self._pos = 0

    def size_in_bytes(self) -> int:
        size: int = self._records.size_in_bytes()  # aiokafka is untyped
        return size

    def has_next(self) -> bool:
        more: bool = self._records.has_next()
        return more

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._pos
        (length,) = _LENGTH.unpack_from(self._data, start + _LENGTH_AT)
        self._pos = start + _LENGTH_AT + _LENGTH.size + length  # the batch aiokafka just framed
        if self._data[start + _MAGIC_AT] < 2:  # v0/v1 message sets have no headers
            return batch
        return _TolerantBatch(batch, self._data[start:self._pos])


def install() -> None:
    """Make every aiokafka consumer of this process fetch through ``TolerantMemoryRecords``."""
    fetcher.MemoryRecords = TolerantMemoryRecords
