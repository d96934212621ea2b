"""The dependency rule: cli -> operations -> {core, format, stores, state}.

The core and the format layer never import stores, state, operations or the
CLI; the core imports nothing that touches the file system, the clock or
randomness. Checked on the source text with ``ast`` so that a lazy import
inside a function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bundlesync"

FORBIDDEN: dict[str, set[str]] = {
    "core": {
        "bundlesync.stores", "bundlesync.state", "bundlesync.operations", "bundlesync.cli",
        "bundlesync.format", "os", "pathlib", "time", "random", "sqlite3", "secrets",
        "datetime", "shutil", "subprocess", "socket", "tempfile", "uuid", "io",
    },
    "format": {"bundlesync.stores", "bundlesync.state", "bundlesync.operations", "bundlesync.cli"},
    "stores": {"bundlesync.state", "bundlesync.operations", "bundlesync.cli"},
    "state": {"bundlesync.operations", "bundlesync.cli"},
    "operations": {"bundlesync.cli"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(layer: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imported_modules(path):
            for banned in FORBIDDEN[layer]:
                if name == banned or name.startswith(banned + "."):
                    found.append(f"{path.relative_to(PACKAGE)} imports {name}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    assert (PACKAGE / layer).is_dir()
    assert violations(layer) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    import os\n    from bundlesync.cli import main\n")
    assert imported_modules(bad) >= {"os", "bundlesync.cli"}
