"""The compatibility gate, the OrderPlaced v2 evolution, and what bad input the serde refuses."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest
from click.testing import CliRunner

from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.contracts import Incompatibility, Problem, check_schemas, schemas
from streams.failures import FailureKind, classify
from streams.serde import AvroSerde, EmbeddedRegistry, frame
from streams.serde.avro import AvroDecodeError
from streams.serde.registry import DEFAULT_SCHEMAS_DIR

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = EmbeddedRegistry.load()
SERDE = AvroSerde(EMBEDDED)
CUSTOMER = {"customer_id": "C000042", "name": "Ada Lovelace", "tier": "gold", "country": "GB",
            "since": "2019-03-04"}


def _record(*fields: dict[str, Any], name: str = "Thing") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test", "fields": list(fields)}


def _schemas_dir(tmp_path: Path, level: str | None, *versions: dict[str, Any], subject: str = "test.Thing") -> Path:
    """A schemas/ folder with one subject whose versions are ``versions``, at ``level``."""
    root = tmp_path / "schemas"
    (root / "Thing").mkdir(parents=True)
    for number, definition in enumerate(versions, start=1):
        (root / "Thing" / f"v{number}.avsc").write_text(json.dumps(definition))
    entry: dict[str, Any] = {"directory": "Thing", "versions": {str(n): 100 + n for n in range(1, len(versions) + 1)}}
    if level is not None:
        entry["compatibility"] = level
    (root / "registry.json").write_text(json.dumps({"subjects": {subject: entry}}))
    return root


ID = {"name": "id", "type": "string"}
NOTE_WITH_DEFAULT = {"name": "note", "type": ["null", "string"], "default": None}
COUNT_REQUIRED = {"name": "count", "type": "int"}


# ------------------------------------------------------------------------ the gate ---


def test_the_repository_passes_the_gate() -> None:
    result = CliRunner().invoke(schemas, ["check"])
    assert result.exit_code == 0, result.output
    for subject in EMBEDDED.subjects():
        assert f"ok    {subject}: " in result.output


def test_the_gate_runs_as_a_module() -> None:
    done = subprocess.run([sys.executable, "-m", "streams.contracts", "check"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every subject follows its compatibility level" in done.stdout


def test_a_prepared_incompatible_change_fails_the_gate_naming_subject_versions_field_and_reason(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, copy)
    index = json.loads((copy / "registry.json").read_text())
    entry = index["subjects"][ORDER_PLACED]
    entry["versions"]["3"] = 9_999
    (copy / "registry.json").write_text(json.dumps(index))
    v3 = json.loads((copy / entry["directory"] / "v2.avsc").read_text())
    v3["fields"].append({"name": "loyalty_points", "type": "int"})  # no default
    (copy / entry["directory"] / "v3.avsc").write_text(json.dumps(v3))

    result = CliRunner().invoke(schemas, ["check", "--schemas-dir", str(copy)])

    assert result.exit_code == 1
    assert (f"FAIL  {ORDER_PLACED}: v3 breaks BACKWARD with v2: v3 cannot read data written with v2: "
            f"field 'loyalty_points' (/fields/10): the reader has this field without a default") in result.output
    assert "1 incompatible change(s)" in result.output


@pytest.mark.parametrize(
    ("level", "versions", "ok"),
    [
        ("BACKWARD", [[ID], [ID, NOTE_WITH_DEFAULT]], True),
        ("BACKWARD", [[ID], [ID, COUNT_REQUIRED]], False),  # v2 cannot read v1 data: no count
        ("BACKWARD", [[ID, COUNT_REQUIRED], [ID]], True),  # a removed field is skipped
        ("FORWARD", [[ID], [ID, COUNT_REQUIRED]], True),  # v1 ignores the new field
        ("FORWARD", [[ID, COUNT_REQUIRED], [ID]], False),  # v1 needs count, v2 data has none
        ("FULL", [[ID], [ID, NOTE_WITH_DEFAULT]], True),
        ("FULL", [[ID], [ID, COUNT_REQUIRED]], False),
        ("FULL", [[ID, COUNT_REQUIRED], [ID]], False),
        ("NONE", [[ID, COUNT_REQUIRED], [{"name": "id", "type": "long"}]], True),
    ],
)
def test_each_level_checks_the_direction_it_names(tmp_path: Path, level: str, versions: list[list[dict[str, Any]]],
                                                   ok: bool) -> None:
    root = _schemas_dir(tmp_path, level, *[_record(*fields) for fields in versions])
    assert check_schemas(root).ok is ok


def test_a_subject_without_a_level_is_checked_backward(tmp_path: Path) -> None:
    root = _schemas_dir(tmp_path, None, _record(ID), _record(ID, COUNT_REQUIRED))
    [problem] = check_schemas(root).problems
    assert isinstance(problem, Incompatibility)
    assert (problem.level, problem.reader_version, problem.writer_version) == ("BACKWARD", 2, 1)


def test_backward_transitive_checks_every_earlier_version_not_only_the_last(tmp_path: Path) -> None:
    # v2 drops x, v3 brings it back as an int: v3 reads v2 data, but not v1's strings.
    x_string = {"name": "x", "type": "string"}
    x_int = {"name": "x", "type": "int", "default": 0}
    versions = (_record(ID, x_string), _record(ID), _record(ID, x_int))
    assert check_schemas(_schemas_dir(tmp_path / "plain", "BACKWARD", *versions)).ok
    [problem] = check_schemas(_schemas_dir(tmp_path / "transitive", "BACKWARD_TRANSITIVE", *versions)).problems
    assert isinstance(problem, Incompatibility)
    assert (problem.version, problem.other_version, problem.field) == (3, 1, "x")
    assert "reader type: int not compatible with writer type: string" in problem.reason


def test_forward_transitive_checks_that_every_earlier_version_reads_the_new_one(tmp_path: Path) -> None:
    x_string = {"name": "x", "type": "string", "default": ""}
    x_int = {"name": "x", "type": "int"}
    versions = (_record(ID, x_string), _record(ID), _record(ID, x_int))
    assert check_schemas(_schemas_dir(tmp_path / "plain", "FORWARD", *versions)).ok
    [problem] = check_schemas(_schemas_dir(tmp_path / "transitive", "FORWARD_TRANSITIVE", *versions)).problems
    assert isinstance(problem, Incompatibility)
    assert (problem.reader_version, problem.writer_version, problem.field) == (1, 3, "x")


def test_full_transitive_checks_both_ways_with_every_earlier_version(tmp_path: Path) -> None:
    x_string = {"name": "x", "type": "string", "default": ""}
    x_int = {"name": "x", "type": "int", "default": 0}
    versions = (_record(ID, x_string), _record(ID), _record(ID, x_int))
    assert check_schemas(_schemas_dir(tmp_path / "plain", "FULL", *versions)).ok
    problems = check_schemas(_schemas_dir(tmp_path / "transitive", "FULL_TRANSITIVE", *versions)).problems
    directions = {(p.reader_version, p.writer_version) for p in problems if isinstance(p, Incompatibility)}
    assert directions == {(3, 1), (1, 3)}


def test_several_problems_in_one_pair_are_each_named_with_their_own_field(tmp_path: Path) -> None:
    item = {"name": "items", "type": {"type": "array", "items": _record({"name": "qty", "type": "int"},
                                                                        name="Item")}}
    item_changed = {"name": "items", "type": {"type": "array", "items": _record({"name": "qty", "type": "string"},
                                                                                name="Item")}}
    root = _schemas_dir(tmp_path, "BACKWARD", _record(ID, item), _record(ID, item_changed, COUNT_REQUIRED))
    found = {(p.field, p.location): p.reason for p in check_schemas(root).problems if isinstance(p, Incompatibility)}
    assert set(found) == {("items[].qty", "/fields/1/type/items/fields/0/type"), ("count", "/fields/2")}
    assert "reader type: string not compatible with writer type: int" in found[("items[].qty",
                                                                                "/fields/1/type/items/fields/0/type")]
    assert "without a default" in found[("count", "/fields/2")]


def test_an_unknown_level_and_an_invalid_schema_are_problems(tmp_path: Path) -> None:
    [unknown] = check_schemas(_schemas_dir(tmp_path / "a", "SIDEWAYS", _record(ID))).problems
    assert isinstance(unknown, Problem) and "unknown compatibility level 'SIDEWAYS'" in unknown.message
    [invalid] = check_schemas(_schemas_dir(tmp_path / "b", "BACKWARD", _record(ID), {"type": "record",
                                                                                      "name": "Thing"})).problems
    assert str(invalid) == ("test.Thing: v2 is not a valid Avro schema: "
                            "Record schema requires a non-empty fields property.")
    root = _schemas_dir(tmp_path / "c", "BACKWARD", _record(ID), _record(ID))
    (root / "Thing" / "v2.avsc").write_text('{"type": "record", "name": ')
    [unreadable] = check_schemas(root).problems
    assert str(unreadable).startswith("test.Thing: v2 (v2.avsc) does not load: JSONDecodeError")


# ----------------------------------------------------------------------- evolution ---


def test_order_placed_v2_adds_coupon_code_with_a_default() -> None:
    v1, v2 = EMBEDDED.versions(ORDER_PLACED)[:2]
    added = {f["name"] for f in v2.definition["fields"]} - {f["name"] for f in v1.definition["fields"]}
    assert added == {"coupon_code"}
    assert EMBEDDED.latest(ORDER_PLACED).version == 2


def test_events_of_v1_producers_read_as_v2_with_no_coupon() -> None:
    order = sample_orders(1)[0]
    data = SERDE.encode_with(EMBEDDED.versions(ORDER_PLACED)[0], order)
    assert int.from_bytes(data[1:5], "big") == EMBEDDED.versions(ORDER_PLACED)[0].schema_id
    decoded = SERDE.decode(data, ORDER_PLACED)
    assert decoded["coupon_code"] is None
    assert decoded["event_id"] == order["event_id"]


def test_events_of_v2_producers_keep_their_coupon_and_old_readers_skip_it() -> None:
    order = next(o for o in sample_orders(20, version=2) if o["coupon_code"])
    data = SERDE.encode(ORDER_PLACED, order)
    assert SERDE.decode(data, ORDER_PLACED)["coupon_code"] == order["coupon_code"]
    v1 = EMBEDDED.versions(ORDER_PLACED)[0]
    writer = EMBEDDED.by_id(int.from_bytes(data[1:5], "big"))
    old_reader = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer.parsed, v1.parsed)
    assert "coupon_code" not in old_reader
    assert old_reader["order_id"] == order["order_id"]


def test_fastavros_writer_refuses_keys_the_schema_lacks() -> None:
    """Why EnrichedOrder gained coupon_code too: the pipeline spreads the whole event into it."""
    enriched_v1 = EMBEDDED.versions(ENRICHED_ORDER)[0]
    order = sample_orders(1, version=2)[0]
    record = {**order, "customer": CUSTOMER, "enriched_at": 0, "pipeline": "p"}
    with pytest.raises(ValueError, match="more fields than the schema specifies: coupon_code"):
        fastavro.schemaless_writer(io.BytesIO(), enriched_v1.parsed, record, strict_allow_default=True)


def test_every_order_placed_field_is_an_enriched_order_field_of_the_same_type() -> None:
    order = {f["name"]: f["type"] for f in EMBEDDED.latest(ORDER_PLACED).definition["fields"]}
    enriched = {f["name"]: f["type"] for f in EMBEDDED.latest(ENRICHED_ORDER).definition["fields"]}
    missing = order.keys() - enriched.keys()
    assert not missing, f"OrderPlaced fields the pipeline would copy into EnrichedOrder, which lacks them: {missing}"
    for name, avro_type in order.items():
        assert json.dumps(enriched[name], sort_keys=True) == json.dumps(avro_type, sort_keys=True), name


@pytest.mark.parametrize("producer_version", [1, 2])
def test_the_enriched_output_is_right_for_v1_and_v2_producers(producer_version: int) -> None:
    order = next(o for o in sample_orders(20, version=producer_version) if o.get("coupon_code", "x"))
    written = EMBEDDED.versions(ORDER_PLACED)[producer_version - 1]
    event = SERDE.decode(SERDE.encode_with(written, order), ORDER_PLACED)
    enriched = {**event, "customer": CUSTOMER, "enriched_at": 1, "pipeline": "orders-enricher"}  # as OrderEnricher

    output = SERDE.decode(SERDE.encode(ENRICHED_ORDER, enriched), ENRICHED_ORDER)

    assert output["coupon_code"] == order.get("coupon_code")
    assert output["order_id"] == order["order_id"]
    assert output["customer"] == CUSTOMER


def test_enriched_order_v2_records_are_readable_by_v1_consumers() -> None:
    order = sample_orders(1, version=2)[0]
    data = SERDE.encode(ENRICHED_ORDER, {**order, "customer": CUSTOMER, "enriched_at": 1, "pipeline": "p"})
    v1 = EMBEDDED.versions(ENRICHED_ORDER)[0]
    read = fastavro.schemaless_reader(io.BytesIO(data[5:]), EMBEDDED.latest(ENRICHED_ORDER).parsed, v1.parsed)
    assert "coupon_code" not in read and read["customer"] == CUSTOMER


# ----------------------------------------------------------------------- bad input ---


def test_a_header_without_a_body_is_truncated() -> None:
    schema_id = EMBEDDED.latest(ORDER_PLACED).schema_id
    with pytest.raises(AvroDecodeError, match="Avro body of 0 bytes is truncated"):
        SERDE.decode(frame(schema_id, b""), ORDER_PLACED)


def _registry_with(tmp_path: Path, subjects: dict[str, list[list[dict[str, Any]]]]) -> EmbeddedRegistry:
    """A registry whose subjects hold records named like OrderPlaced, with these versions' fields."""
    record = EMBEDDED.versions(ORDER_PLACED)[0].definition
    root = tmp_path / "schemas"
    index: dict[str, Any] = {"subjects": {}}
    next_id = 1
    for number, (subject, versions) in enumerate(subjects.items()):
        folder = root / f"s{number}"
        folder.mkdir(parents=True)
        entry: dict[str, Any] = {"directory": folder.name, "versions": {}}
        for version, fields in enumerate(versions, start=1):
            (folder / f"v{version}.avsc").write_text(json.dumps({**record, "fields": fields}))
            entry["versions"][str(version)] = next_id
            next_id += 1
        index["subjects"][subject] = entry
    (root / "registry.json").write_text(json.dumps(index))
    return EmbeddedRegistry.load(root)


V1_FIELDS: list[dict[str, Any]] = EMBEDDED.versions(ORDER_PLACED)[0].definition["fields"]


def test_a_writer_schema_whose_field_type_the_reader_cannot_resolve_is_refused(tmp_path: Path) -> None:
    # A producer registered its own "OrderPlaced", with the amount as a string, under another subject.
    amount_as_text = [{**f, "type": "string"} if f["name"] == "amount_cents" else f for f in V1_FIELDS]
    registry = _registry_with(tmp_path, {ORDER_PLACED: [V1_FIELDS], "legacy.orders": [amount_as_text]})
    serde = AvroSerde(registry)
    data = serde.encode("legacy.orders", {**sample_orders(1)[0], "amount_cents": "12.50"})
    with pytest.raises(AvroDecodeError, match=r"writer schema legacy.orders v1 \(id 2\) cannot be resolved to the "
                                              r"reader schema dev.streams.orders.OrderPlaced"):
        serde.decode(data, ORDER_PLACED)


def test_a_reader_field_without_default_that_the_writer_lacks_is_refused(tmp_path: Path) -> None:
    registry = _registry_with(tmp_path, {ORDER_PLACED: [V1_FIELDS, [*V1_FIELDS, {"name": "points", "type": "int"}]]})
    serde = AvroSerde(registry)
    v1_data = serde.encode_with(registry.versions(ORDER_PLACED)[0], sample_orders(1)[0])
    with pytest.raises(AvroDecodeError, match=r"OrderPlaced v1 \(id 1\) cannot be resolved"):
        serde.decode(v1_data, ORDER_PLACED)


@pytest.mark.parametrize("data", [frame(1, b""), frame(424_242, b"\x02x"), b"\x01\x00\x00\x00\x01x", b"\x00"])
def test_every_undecodable_record_is_poison(data: bytes) -> None:
    with pytest.raises(Exception) as caught:  # which one is the next assertion's point
        SERDE.decode(data, ORDER_PLACED)
    assert classify(caught.value).kind is FailureKind.POISON
