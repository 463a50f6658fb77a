"""ConfluentRegistry and the compatibility gate against a real Schema Registry (Apicurio's ccompat API)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.contracts import schemas
from streams.serde import AvroSerde, EmbeddedRegistry, UnknownSchemaError
from streams.serde.confluent import ConfluentRegistry, IncompatibleSchemaError, RegistryUnavailableError
from streams.serde.factory import PushedSchema, push_schemas, registry_from_url
from streams.serde.registry import DEFAULT_SCHEMAS_DIR

EMBEDDED = EmbeddedRegistry.load()


def _subject(unique: str) -> str:
    return f"test.contract.{unique}.Thing"


def _thing(*extra_fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Thing", "namespace": "test.contract",
            "fields": [{"name": "id", "type": "string"}, *extra_fields]}


def test_a_registered_schema_is_found_by_id_by_version_and_as_latest(registry: ConfluentRegistry,
                                                                    unique: str) -> None:
    subject = _subject(unique)
    schema_id = registry.register(subject, _thing())

    by_id = registry.by_id(schema_id)
    assert by_id.definition == _thing()
    assert (by_id.subject, by_id.version) == (subject, 1)
    assert registry.version(subject, 1).schema_id == schema_id
    assert registry.latest(subject).schema_id == schema_id
    assert registry.versions(subject) == [1]
    assert subject in registry.subjects()


def test_registering_the_same_schema_again_in_other_formatting_returns_its_id(registry: ConfluentRegistry,
                                                                              unique: str) -> None:
    subject = _subject(unique)
    first = registry.register(subject, json.dumps(_thing(), indent=2))
    again = registry.register(subject, json.dumps(_thing(), separators=(",", ":")))
    assert again == first
    assert registry.versions(subject) == [1]
    found = registry.lookup(subject, _thing())
    assert found is not None and found.schema_id == first
    assert registry.lookup(subject, _thing({"name": "other", "type": "int"})) is None


def test_the_registry_checks_compatibility_at_the_level_set_for_the_subject(registry: ConfluentRegistry,
                                                                            unique: str) -> None:
    subject = _subject(unique)
    registry.register(subject, _thing())
    registry.set_compatibility(subject, "BACKWARD")
    assert registry.compatibility(subject) == "BACKWARD"

    with_default = _thing({"name": "note", "type": ["null", "string"], "default": None})
    without_default = _thing({"name": "count", "type": "int"})
    assert registry.check_compatibility(subject, with_default).compatible
    assert not registry.check_compatibility(subject, without_default).compatible
    with pytest.raises(IncompatibleSchemaError, match="409"):
        registry.register(subject, without_default)

    registry.set_compatibility(subject, "NONE")
    assert registry.check_compatibility(subject, without_default).compatible


def test_unknown_ids_and_subjects_are_unknown_schema_errors(registry: ConfluentRegistry, unique: str) -> None:
    with pytest.raises(UnknownSchemaError, match="schema id 987654 is not registered"):
        registry.by_id(987_654)
    with pytest.raises(UnknownSchemaError, match="404"):
        registry.latest(_subject(unique))
    with pytest.raises(UnknownSchemaError, match="404"):
        registry.version(ORDER_PLACED, 999)


def test_a_registry_that_does_not_answer_is_a_transient_error() -> None:
    nobody = ConfluentRegistry("http://127.0.0.1:9/apis/ccompat/v7", timeout=1.0)
    with pytest.raises(RegistryUnavailableError, match="did not answer"):
        nobody.by_id(1)


def test_pushing_schemas_registers_every_version_in_order_and_is_idempotent(
    registry: ConfluentRegistry, pushed_schemas: list[PushedSchema]
) -> None:
    again = push_schemas(registry)
    assert again == pushed_schemas
    for pushed in pushed_schemas:
        held = registry.version(pushed.subject, pushed.version)
        assert held.schema_id == pushed.registry_id
        assert held.definition == EMBEDDED.by_id(pushed.embedded_id).definition
    assert registry.compatibility(ORDER_PLACED) == EMBEDDED.compatibility(ORDER_PLACED)
    assert registry.latest(ORDER_PLACED).version == EMBEDDED.latest(ORDER_PLACED).version


def test_in_registry_mode_frames_carry_the_registry_ids(schema_registry_url: str,
                                                        pushed_schemas: list[PushedSchema]) -> None:
    serde = AvroSerde(registry_from_url(schema_registry_url))
    order = sample_orders(1, version=2)[0]
    data = serde.encode(ORDER_PLACED, order)
    registry_id = {(p.subject, p.version): p.registry_id for p in pushed_schemas}[(ORDER_PLACED, 2)]
    assert int.from_bytes(data[1:5], "big") == registry_id
    assert serde.decode(data, ORDER_PLACED)["coupon_code"] == order["coupon_code"]
    assert serde.registry.latest(ENRICHED_ORDER).version == EMBEDDED.latest(ENRICHED_ORDER).version


def test_the_gate_passes_the_repository_against_the_registry(schema_registry_url: str,
                                                             pushed_schemas: list[PushedSchema]) -> None:
    result = CliRunner().invoke(schemas, ["check", "--registry-url", schema_registry_url])
    assert result.exit_code == 0, result.output
    assert f"{ORDER_PLACED}: v2 is registered" in result.output


def test_the_gate_fails_when_the_registry_refuses_a_version(schema_registry_url: str,
                                                            pushed_schemas: list[PushedSchema],
                                                            tmp_path: Path) -> None:
    # A v3 that breaks BACKWARD, in a copy whose registry.json says NONE: the local check lets
    # it pass, so only the registry's own endpoint (BACKWARD, set by the push) can fail it.
    copy = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMAS_DIR, copy)
    index = json.loads((copy / "registry.json").read_text())
    entry = index["subjects"][ORDER_PLACED]
    entry["compatibility"] = "NONE"
    entry["versions"]["3"] = 9_999
    (copy / "registry.json").write_text(json.dumps(index))
    v3 = json.loads((copy / entry["directory"] / "v2.avsc").read_text())
    v3["fields"].append({"name": "loyalty_points", "type": "int"})
    (copy / entry["directory"] / "v3.avsc").write_text(json.dumps(v3))

    result = CliRunner().invoke(schemas, ["check", "--schemas-dir", str(copy), "--registry-url",
                                          schema_registry_url])

    assert result.exit_code == 1, result.output
    assert f"{ORDER_PLACED}: v3: the registry at {schema_registry_url} says it is not BACKWARD compatible" \
        in result.output
    assert f"{ORDER_PLACED}: the registry applies BACKWARD, registry.json says NONE" in result.output


def test_in_registry_mode_the_pipeline_reads_and_writes_its_own_version_not_the_registrys_newest(
    registry: ConfluentRegistry, unique: str, tmp_path: Path
) -> None:
    subject = _subject(unique)
    note = {"name": "note", "type": ["null", "string"], "default": None}
    later = {"name": "later", "type": ["null", "int"], "default": None}
    root = tmp_path / "schemas"
    (root / "Thing").mkdir(parents=True)
    (root / "Thing" / "v1.avsc").write_text(json.dumps(_thing()))
    (root / "Thing" / "v2.avsc").write_text(json.dumps(_thing(note)))
    (root / "registry.json").write_text(json.dumps({"subjects": {subject: {"directory": "Thing",
                                                                          "versions": {"1": 1, "2": 2}}}}))
    pinned = registry_from_url(registry.url, push_embedded=True, schemas_dir=root)
    newer_id = registry.register(subject, _thing(note, later))  # someone registers a v3 later

    ours = pinned.latest(subject)
    assert ours.version == 2 and ours.schema_id == registry.version(subject, 2).schema_id
    assert registry.latest(subject).schema_id == newer_id
    serde = AvroSerde(pinned)
    v3_data = AvroSerde(registry).encode(subject, {"id": "a", "note": "n", "later": 3})
    assert serde.decode(v3_data, subject) == {"id": "a", "note": "n"}  # v3 data, read as our v2


def test_in_registry_mode_an_unregistered_own_schema_is_named(registry: ConfluentRegistry, unique: str,
                                                              tmp_path: Path) -> None:
    subject = _subject(unique)
    root = tmp_path / "schemas"
    (root / "Thing").mkdir(parents=True)
    (root / "Thing" / "v1.avsc").write_text(json.dumps(_thing()))
    (root / "registry.json").write_text(json.dumps({"subjects": {subject: {"directory": "Thing",
                                                                          "versions": {"1": 1}}}}))
    with pytest.raises(UnknownSchemaError, match=rf"{subject} v1 of schemas/ is not registered in .*schemas push"):
        registry_from_url(registry.url, schemas_dir=root).latest(subject)
