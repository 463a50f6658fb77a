"""The Confluent wire format and the Avro serde over the embedded registry."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from streams.pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from streams.samples import sample_orders
from streams.serde import AvroSerde, EmbeddedRegistry, UnknownSchemaError, WireFormatError, frame, unframe
from streams.serde.avro import AvroDecodeError, AvroEncodeError
from streams.serde.registry import DEFAULT_SCHEMAS_DIR


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde(EmbeddedRegistry.load())


def test_frame_writes_magic_byte_and_big_endian_id() -> None:
    assert frame(258, b"body") == b"\x00\x00\x00\x01\x02body"
    schema_id, body = unframe(b"\x00\x00\x00\x01\x02body")
    assert (schema_id, bytes(body)) == (258, b"body")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "tombstone"),
        (b"\x00\x00", "shorter than the 5-byte"),
        (b"\x01\x00\x00\x00\x01x", "magic byte is 0x01"),
        (b"{\"json\": true}", "magic byte is 0x7b"),
    ],
)
def test_unframe_names_what_is_wrong(data: bytes | None, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        unframe(data)


def test_order_round_trips_through_the_wire_format(serde: AvroSerde) -> None:
    order = sample_orders(1)[0]
    data = serde.encode(ORDER_PLACED, order)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == serde.registry.latest(ORDER_PLACED).schema_id
    decoded = serde.decode(data, ORDER_PLACED)
    assert decoded["event_id"] == order["event_id"]
    assert decoded["items"] == order["items"]
    assert int(decoded["placed_at"].timestamp() * 1000) == order["placed_at"]


def test_pinned_ids_come_from_the_committed_index() -> None:
    registry = EmbeddedRegistry.load()
    index = json.loads((DEFAULT_SCHEMAS_DIR / "registry.json").read_text())
    for subject, entry in index["subjects"].items():
        for version, schema_id in entry["versions"].items():
            assert registry.by_id(schema_id).subject == subject
            assert registry.by_id(schema_id).version == int(version)


def test_unknown_schema_id_is_refused(serde: AvroSerde) -> None:
    with pytest.raises(UnknownSchemaError, match="schema id 999999 is not registered"):
        serde.decode(frame(999_999, b"\x02x"))


def test_truncated_body_is_refused(serde: AvroSerde) -> None:
    data = serde.encode(ORDER_PLACED, sample_orders(1)[0])
    with pytest.raises(AvroDecodeError, match="truncated"):
        serde.decode(data[:-10])


def test_trailing_bytes_are_refused(serde: AvroSerde) -> None:
    data = serde.encode(ORDER_PLACED, sample_orders(1)[0])
    with pytest.raises(AvroDecodeError, match="3 bytes left over"):
        serde.decode(data + b"abc")


def test_a_record_of_another_schema_does_not_resolve_as_an_order(serde: AvroSerde) -> None:
    order = sample_orders(1)[0]
    enriched = {**order, "customer": {"customer_id": "C1", "name": "n", "tier": "t", "country": "c", "since": "s"},
                "enriched_at": 0, "pipeline": "p"}
    data = serde.encode(ENRICHED_ORDER, enriched)
    with pytest.raises(AvroDecodeError, match=r"EnrichedOrder v\d+ \(id \d+\) cannot be resolved to the reader schema"):
        serde.decode(data, ORDER_PLACED)


def test_encoding_a_record_that_misses_a_field_says_which_schema(serde: AvroSerde) -> None:
    order = sample_orders(1)[0]
    del order["currency"]
    with pytest.raises(AvroEncodeError, match=r"OrderPlaced v\d+"):
        serde.encode(ORDER_PLACED, order)


def test_an_id_pinned_twice_is_a_load_error(tmp_path: Path) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, copy)
    index = json.loads((copy / "registry.json").read_text())
    index["subjects"][ENRICHED_ORDER]["versions"]["1"] = index["subjects"][ORDER_PLACED]["versions"]["1"]
    (copy / "registry.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="pinned twice"):
        EmbeddedRegistry.load(copy)
