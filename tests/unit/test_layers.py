"""The layers hold: the connector library imports nothing of the runtime, and the runtime's own
Kafka code uses only aiokafka's public API (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_of_the_connector_library_imports_the_runtime() -> None:
    offenders = {str(path.relative_to(REPO)): sorted(n for n in _imports(path) if n.split(".")[0] == "streams")
                 for path in (REPO / "connectors").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


# An attribute whose name starts with one underscore, reached on anything but self or cls.
_PRIVATE = re.compile(r"(?<![\w.])[A-Za-z_][\w.\[\]]*\._[a-z]\w*")


def _private_uses(line: str) -> list[str]:
    code = line.split("#", 1)[0]
    return [m.group() for m in _PRIVATE.finditer(code) if not m.group().startswith(("self.", "cls.", "_"))]


def test_the_runtimes_kafka_code_touches_no_private_attribute_of_a_library() -> None:
    found = [f"{path.relative_to(REPO)}:{number}: {use}"
             for path in sorted([*(REPO / "streams" / "kafka").glob("*.py"), REPO / "streams" / "dlq.py",
                                 REPO / "streams" / "sources" / "catalog.py"])
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for use in _private_uses(line)]
    assert found == []


def test_the_private_attribute_check_finds_one() -> None:
    assert _private_uses("await consumer._client.force_metadata_update()") == ["consumer._client"]
    assert _private_uses("self._topics = topics") == []


def test_user_pipelines_import_only_the_public_api_of_streams() -> None:
    files = [*(REPO / "pipelines").glob("*.py"), *(REPO / "examples").rglob("*.py")]
    offenders = {str(path.relative_to(REPO)): sorted(n for n in _imports(path) if n.startswith("streams."))
                 for path in files}
    assert {path: names for path, names in offenders.items() if names} == {}
    assert "streams" in _imports(REPO / "pipelines" / "orders.py")
