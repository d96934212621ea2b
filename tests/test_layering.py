"""The dependency rule: cli -> operations -> {core, format, stores, state};
cli -> archive -> {core, format, stores} (plus the operations' failpoints and filters).

The core and the format layer never import stores, state, operations or the
CLI; the core imports nothing that touches the file system, the clock or
randomness; only the CLI imports click. The top-level modules (errors, keys,
fsio, ...) each have their own list, and every module of the package must be
covered by one of the rules. All SQL lives in ``bundlesync/state/``: no other
module touches a connection, runs a statement, opens or rolls back a
transaction, or holds SQL text. Checked on the source text with ``ast`` so that
a lazy import inside a function is caught too.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bundlesync"

# Neither a library nor a layer: only the command line may use these.
CLI_ONLY = {"click"}
ABOVE_CORE = {"bundlesync.stores", "bundlesync.state", "bundlesync.operations",
              "bundlesync.cli", "bundlesync.format", "bundlesync.archive"}

FORBIDDEN: dict[str, set[str]] = {
    "core": ABOVE_CORE | CLI_ONLY | {
        "bundlesync.keys", "bundlesync.fsio", "os", "pathlib", "time", "random", "sqlite3",
        "secrets", "datetime", "shutil", "subprocess", "socket", "tempfile", "uuid", "io",
    },
    # Archives sit beside the operations: the writer reads the store, reuses the format
    # layer's CBOR and COSE pieces, the failpoints and the mailbox filters; it never
    # touches the state index or the CLI.
    "archive": {"bundlesync.state", "bundlesync.cli"} | CLI_ONLY,
    "format": {"bundlesync.stores", "bundlesync.state", "bundlesync.operations",
               "bundlesync.cli", "bundlesync.archive"} | CLI_ONLY,
    "stores": {"bundlesync.state", "bundlesync.operations", "bundlesync.cli",
               "bundlesync.format", "bundlesync.keys"} | CLI_ONLY,
    "state": {"bundlesync.operations", "bundlesync.cli", "bundlesync.stores"} | CLI_ONLY,
    "operations": {"bundlesync.cli"} | CLI_ONLY,
    "cli": set(),
}

# Top-level modules, by file: what each may not import.
TOP_LEVEL: dict[str, set[str]] = {
    "__init__.py": ABOVE_CORE | CLI_ONLY | {"bundlesync.core"},
    # The command's entry: the quick path of a no-change run, else the command line.
    "__main__.py": ABOVE_CORE - {"bundlesync.cli", "bundlesync.operations"},
    "errors.py": ABOVE_CORE | CLI_ONLY | {"bundlesync.core", "bundlesync.keys", "sqlite3"},
    "fsio.py": ABOVE_CORE | CLI_ONLY | {"bundlesync.core", "bundlesync.keys",
                                         "bundlesync.errors"},
    "keys.py": ABOVE_CORE | CLI_ONLY | {"bundlesync.core", "sqlite3"},
}

# Only the state layer speaks SQL.
SQL_LAYER = "state"
_SQL_TEXT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|"
    r"RELEASE|PRAGMA|VACUUM|WITH)\b")
_SQL_ATTRIBUTES = {"db", "_db", "execute", "executemany", "executescript", "in_transaction",
                   "set_trace_callback", "commit", "rollback", "cursor"}


@functools.cache
def parsed(path: Path) -> ast.Module:
    """Each module is parsed once for all the checks below."""
    return ast.parse(path.read_text(encoding="utf-8"))


def imported_modules(path: Path) -> set[str]:
    tree = parsed(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def banned_imports(path: Path, banned: set[str]) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for name in sorted(imported_modules(path))
        for rule in banned
        if name == rule or name.startswith(rule + ".")
    ]


def violations(layer: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        found += banned_imports(path, FORBIDDEN[layer])
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_uses(path: Path, *, base: Path = PACKAGE) -> list[str]:
    """Where ``path`` touches SQLite or holds SQL text (docstrings aside)."""
    tree = parsed(path)
    docstrings = _docstrings(tree)
    found = []
    where = path.relative_to(base)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _SQL_ATTRIBUTES:
            found.append(f"{where}:{node.lineno} uses .{node.attr}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings and _SQL_TEXT.match(node.value)):
            found.append(f"{where}:{node.lineno} holds SQL {node.value[:30]!r}")
    if "sqlite3" in imported_modules(path):
        found.append(f"{where} imports sqlite3")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    assert (PACKAGE / layer).is_dir()
    assert violations(layer) == []


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_top_level_module_imports_only_what_it_may(name: str) -> None:
    assert banned_imports(PACKAGE / name, TOP_LEVEL[name]) == []


def test_every_module_is_under_a_rule() -> None:
    uncovered = [
        str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
        if not (path.parent == PACKAGE and path.name in TOP_LEVEL)
        and path.relative_to(PACKAGE).parts[0] not in FORBIDDEN
    ]
    assert uncovered == []


def test_sql_lives_only_in_the_state_layer() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] != SQL_LAYER:
            found += sql_uses(path)
    assert found == []


def test_the_sql_checker_sees_a_connection_and_a_statement(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text('''"""SELECT in a docstring is prose."""
def f(index):
    index.db.execute("BEGIN IMMEDIATE")
    return "SELECT 1"
''')
    found = sql_uses(bad, base=tmp_path)
    assert any(".db" in f for f in found)
    assert any(".execute" in f for f in found)
    assert sum("holds SQL" in f for f in found) == 2
