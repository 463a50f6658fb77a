"""The fetch path's record reading: aiokafka's batches, read again when a header name is not UTF-8."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.kafka.wire_records import TolerantMemoryRecords, read_batch


def batch(compression: int = 0, name: str = "x-AA", base_offset: int = 40) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=1_700_000_000_000, key=b"k0", value=b"v0", headers=[("ok", b"1")])
    builder.append(1, timestamp=1_700_000_000_005, key=None, value=None, headers=[(name, b"2"), ("ok", None)])
    builder.append(2, timestamp=1_700_000_000_009, key=b"k2", value=b"v2" * 300, headers=[])
    raw = bytearray(builder.build())
    raw[0:8] = base_offset.to_bytes(8, "big")
    return bytes(raw)


def with_bad_name(raw: bytes) -> bytes:
    assert raw.count(b"x-AA") == 1
    return raw.replace(b"x-AA", b"x-\xff\xfe")  # same length; aiokafka checks no CRC unless asked


@pytest.mark.parametrize("compression", [0, 1, 2, 3, 4])  # none, gzip, snappy, lz4, zstd
def test_read_batch_reads_what_aiokafka_reads(compression: int) -> None:
    raw = batch(compression)
    records = list(read_batch(raw))
    ours = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in records]
    theirs = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in iter(_first_batch(raw))]
    assert ours == theirs
    assert [r.offset for r in records] == [40, 41, 42]


def test_a_header_name_that_is_not_utf8_keeps_its_bytes_and_the_batch_is_read_whole() -> None:
    raw = with_bad_name(batch())
    with pytest.raises(UnicodeDecodeError):
        list(iter(_first_batch(raw)))  # aiokafka alone: the whole fetch fails
    records = list(_first_batch_tolerant(raw))
    assert [r.offset for r in records] == [40, 41, 42]
    assert records[1].headers[0][0].encode("utf-8", "surrogateescape") == b"x-\xff\xfe"
    assert records[0].headers == [("ok", b"1")] and records[2].value == b"v2" * 300


def test_records_before_the_bad_one_are_not_read_twice_and_batch_attributes_are_aiokafkas() -> None:
    raw = with_bad_name(batch()) + batch(base_offset=43)
    memory = TolerantMemoryRecords(raw)
    offsets = []
    while memory.has_next():
        next_batch = memory.next_batch()
        assert next_batch.next_offset == next_batch.base_offset + 3
        offsets += [record.offset for record in next_batch]
    assert offsets == [40, 41, 42, 43, 44, 45]
    assert memory.next_batch() is None


def _first_batch(raw: bytes):  # type: ignore[no-untyped-def]
    from aiokafka.record.memory_records import MemoryRecords

    return MemoryRecords(raw).next_batch()


def _first_batch_tolerant(raw: bytes):  # type: ignore[no-untyped-def]
    return TolerantMemoryRecords(raw).next_batch()
