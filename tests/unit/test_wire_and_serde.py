"""The Confluent wire format and the Avro serde over the embedded registry."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from pipelines.orders_samples import sample_orders
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


def _enriched(order: dict, n: int) -> dict:
    """An output built the way pipelines build it: the decoded order's own objects, plus more."""
    return {
        **order,
        "customer": {"customer_id": order["customer_id"], "name": f"Name {n}", "tier": "gold", "country": "DE",
                     "since": "2020-01-01"},
        "risk": None if n % 3 == 0 else {"score": n % 100, "band": "low", "source": "live"},
        "amount_eur_cents": None if n % 2 else n * 7,
        "products": [{"sku": item["sku"], "product_id": None if n % 4 == 0 else f"P{n}", "name": "x",
                      "category": "c"} for item in order["items"][: n % 3]],
        "degraded": bool(n % 5 == 0),
        "degraded_reasons": ["fx: stale rate (timeout)"] if n % 5 == 0 else [],
        "enriched_at": 1_700_000_000_000 + n,
        "pipeline": "orders-enricher",
    }


def test_encoding_based_on_the_input_body_gives_the_bytes_of_a_full_encode(serde: AvroSerde) -> None:
    """The output's first fields are the input's: their bytes are reused (splice), nothing else changes."""
    orders = sample_orders(200, seed=11)
    for n, order in enumerate(orders):
        if n % 2:
            order["coupon_code"] = f"SAVE{n}"
        event, source = serde.decode_with_source(serde.encode(ORDER_PLACED, order), ORDER_PLACED)
        assert source is not None and source.record is event
        enriched = _enriched(event, n)
        spliced = serde.encode_based_on(ENRICHED_ORDER, enriched, source)
        assert spliced == serde.encode(ENRICHED_ORDER, enriched)
        assert serde.decode(spliced, ENRICHED_ORDER)["customer"]["name"] == f"Name {n}"
    assert serde._splices  # the splice was planned (and used), not skipped
    assert all(plan is not None for plan in serde._splices.values())


def test_a_changed_order_field_or_a_resolved_input_is_encoded_in_full(serde: AvroSerde) -> None:
    order = sample_orders(1, seed=3)[0]
    event, source = serde.decode_with_source(serde.encode(ORDER_PLACED, order), ORDER_PLACED)
    changed = {**_enriched(event, 1), "channel": "store-42", "items": [dict(event["items"][0], quantity=9)]}
    out = serde.decode(serde.encode_based_on(ENRICHED_ORDER, changed, source), ENRICHED_ORDER)
    assert out["channel"] == "store-42" and out["items"] == [dict(event["items"][0], quantity=9)]
    good = _enriched(event, 2)
    missing = {key: value for key, value in good.items() if key != "pipeline"}
    for bad in (missing, {**good, "unexpected": 1}):  # refused exactly as a full encode refuses it
        with pytest.raises(AvroEncodeError, match="EnrichedOrder v3"):
            serde.encode_based_on(ENRICHED_ORDER, bad, source)
        with pytest.raises(AvroEncodeError, match="EnrichedOrder v3"):
            serde.encode(ENRICHED_ORDER, bad)
    # Written with OrderPlaced v1 (id 1), read as the latest: resolved, so its body is not the record's.
    v1 = serde.registry.by_id(1)
    old = {key: value for key, value in order.items() if key != "coupon_code"}
    _, resolved = serde.decode_with_source(serde.encode_with(v1, old), ORDER_PLACED)
    assert resolved is None
    # An output schema that does not start with the input's fields (EnrichedOrder v1 vs OrderPlaced v1
    # does; Product does not): no plan, a full encode.
    from streams.serde.avro import _Splice

    assert _Splice.plan(serde.registry.by_id(3), serde.registry.by_id(4)) is None
    assert _Splice.plan(serde.registry.by_id(6), serde.registry.by_id(4)) is not None
