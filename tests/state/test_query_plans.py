"""Every statement the hot paths run is served by an index.

A whole exchange between two real sites (init, export, import, local flag
changes, an expunge, a move, a folder rename, a dry run, the way back) is run
with the state index tracing its statements; each distinct statement is then
planned with ``EXPLAIN QUERY PLAN``. No statement may walk a table that grows with
the store (``SCAN``), nor reach files or messages by the ``user`` prefix of the
primary key alone (a walk over every file of the user, per message: what made a
big mailbox quadratic).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bundlesync.core.model import Stream, VersionVector
from bundlesync.operations import scan
from bundlesync.state import index as index_module
from bundlesync.state.index import FileRow, StateIndex
from tests.operations.conftest import Sites
from tests.state.test_index import BOX, A, B, added

# Tables whose size follows the store or the change log.
BIG_TABLES = {"changes", "messages", "files", "mailboxes", "folders", "pending", "spool",
              "peer_wants"}

# Statements allowed to name a big table in a SCAN step, and why that is not a walk.
ALLOWED_SCANS = {
    # EXISTS stops at the first row.
    "SELECT EXISTS (SELECT ? FROM pending) OR EXISTS (SELECT ? FROM pending_users)",
    # Once per user at init (whether the inventory starts from an empty register).
    "SELECT EXISTS (SELECT ? FROM messages WHERE user = ?)",
    # LIMIT 1: whether the spool holds a row, before emptying it.
    "SELECT ? FROM spool LIMIT ?",
    # Once per apply, to group the users with little to do: every row of the
    # journal it counts is work the apply then reads and does.
    "SELECT user, COUNT(*), COUNT(DISTINCT mailbox) FROM pending GROUP BY user",
}

_LITERAL = re.compile(r"[Xx]'[0-9A-Fa-f]*'|'(?:[^']|'')*'|\b\d+\b")
_PLANNED = ("SELECT", "INSERT", "UPDATE", "DELETE")


def normalise(statement: str) -> str:
    """A traced statement (literals expanded by SQLite) with its literals as ``?``."""
    return " ".join(_LITERAL.sub("?", statement).split())


class Tracer:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.plans: dict[str, list[str]] = {}

    def attach(self, index: StateIndex) -> None:
        def seen(statement: str) -> None:
            shape = normalise(statement)
            self.counts[shape] += 1
            if shape not in self.plans and shape.upper().startswith(_PLANNED):
                self.plans[shape] = index.explain(statement)

        index.trace(seen)


@pytest.fixture
def tracer(monkeypatch: pytest.MonkeyPatch) -> Tracer:
    tracer = Tracer()
    opened = index_module.StateIndex.__init__

    def open_traced(self: StateIndex, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        tracer.attach(self)

    monkeypatch.setattr(index_module.StateIndex, "__init__", open_traced)
    return tracer


def exchange(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=4)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo", dry_run=True)
    sites.import_("bravo")
    store = sites.stores["bravo"]
    user = store.users()[0]
    inbox = store.messages(user, ("INBOX",))
    store.set_flags(user, ("INBOX",), inbox[0].key, frozenset({"\\Seen", "\\Flagged"}))
    store.expunge(user, ("INBOX",), inbox[1].key)
    folders = [f.path for f in store.folders(user) if f.path != ("INBOX",)]
    store.rename_folder(user, folders[0], ("Renamed",))
    sites.deliver("bravo", user, ("INBOX",), 900)
    sites.export("bravo")
    sites.import_("alpha")
    sites.export("alpha")
    sites.import_("bravo")


def test_no_hot_statement_walks_a_table(tmp_path: Path, tracer: Tracer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every import weighs its young stamps by their files and waits for them, so the
    # statements that check and keep stamps run whatever the machine's speed.
    monkeypatch.setattr(scan, "SETTLE_MIN_FOLDERS", 10**9)
    monkeypatch.setattr(scan, "SETTLE_MIN_FILES", 1)
    exchange(Sites(tmp_path))
    # The check means something only if the hot statements were all seen.
    shapes = " ".join(tracer.plans)
    for table in ("files", "messages", "changes", "pending", "spool", "folders"):
        assert f"FROM {table}" in shapes
    assert any("files_instance" in " ".join(plan) for plan in tracer.plans.values())
    walks = []
    for shape, plan in sorted(tracer.plans.items()):
        for step in plan:
            scanned = re.match(r"SCAN (\w+)", step)
            if scanned and scanned.group(1) in BIG_TABLES and shape not in ALLOWED_SCANS:
                walks.append(f"{shape}\n    -> {step}")
            if (re.search(r"(files|messages) USING PRIMARY KEY \(user=\?\)", step)
                    and shape not in ALLOWED_SCANS):
                walks.append(f"{shape}\n    -> {step}")
    assert walks == []
    check_bulk_statements(tracer)


# The scan's and ledger's bulk statements, each with the index it must be planned on.
BULK_STATEMENTS = {
    "counter BETWEEN": "SEARCH changes USING PRIMARY KEY (site=? AND incarnation=? AND "
                       "counter>? AND counter<?)",
    "UPDATE folders SET marks = ? WHERE": "SEARCH folders USING PRIMARY KEY (user=? AND guid=?)",
    # Either key of the folder is a seek (SQLite takes the unique path index).
    "UPDATE folders SET marks = ?, uidvalidity": (
        "SEARCH folders USING PRIMARY KEY (user=? AND guid=?)",
        "SEARCH folders USING COVERING INDEX folders_path (user=? AND path=?)"),
    "SELECT key, flags FROM files": "SEARCH files USING PRIMARY KEY (user=? AND folder=?)",
    "SELECT COUNT(*) FROM files WHERE user = ? AND folder": "SEARCH files USING PRIMARY KEY "
                                                            "(user=? AND folder=?)",
    "AND mailbox = ? AND alive LIMIT": "SEARCH messages USING INDEX messages_alive "
                                       "(user=? AND mailbox=?)",
    # The import's reads of a batch: one seek per key in the list, never a walk of
    # the mailbox or folder.
    "SELECT guid, body FROM messages WHERE user = ? AND mailbox = ? AND guid IN": (
        "SEARCH messages USING PRIMARY KEY (user=? AND mailbox=? AND guid=?)"),
    "SELECT guid, body, state FROM messages WHERE user = ? AND mailbox = ? AND guid IN": (
        "SEARCH messages USING PRIMARY KEY (user=? AND mailbox=? AND guid=?)"),
    "FROM files INDEXED BY files_instance WHERE user = ? AND mailbox = ? AND guid IN": (
        "SEARCH files USING INDEX files_instance (user=? AND mailbox=? AND guid=?)"),
    "SELECT key FROM files WHERE user = ? AND folder = ? AND key IN": (
        "SEARCH files USING COVERING INDEX files_folder_key (user=? AND key=? AND folder=?)"),
    "FROM spool WHERE body IN": "SEARCH spool USING PRIMARY KEY (body=?)",
}


# A scan's rows of the files that differ from its listing: a seek per (folder, key)
# pair of a list of values.
BY_KEY = "CROSS JOIN files AS f ON f.user = ?"
BY_KEY_PLAN = ["CO-ROUTINE wanted", "SCAN wanted",
               "SEARCH f USING PRIMARY KEY (user=? AND folder=? AND key=?)"]


def check_bulk_statements(tracer: Tracer) -> None:
    """The bulk statements ran, each planned on its index."""
    by_key = [shape for shape in tracer.plans if BY_KEY in shape]
    assert by_key
    for shape in by_key:
        assert [step for step in tracer.plans[shape] if "CONSTANT ROWS" not in step] == (
            BY_KEY_PLAN), shape
    for fragment, plan in BULK_STATEMENTS.items():
        shapes = [shape for shape in tracer.plans if fragment in shape]
        assert shapes, fragment  # the exchange ran it
        for shape in shapes:
            [step] = tracer.plans[shape]
            assert step in ((plan,) if isinstance(plan, str) else plan), shape
    # The scan checks its new dots in bulk: what is left of lookups of one dot at a
    # time is init's few mailbox creations, never one per message.
    single = sum(n for shape, n in tracer.counts.items()
                 if shape.startswith("SELECT ? FROM changes WHERE site = ? AND incarnation"))
    logged = sum(n for shape, n in tracer.counts.items()
                 if shape.startswith("INSERT INTO changes"))
    assert single <= 20 < logged
    # The import reads files, names, spool places and logged records per batch:
    # lookups of one key at a time are left for the few changes that need the
    # state as it is (the export still reads a message's state per change).
    one_key = sum(n for shape, n in tracer.counts.items() if shape.startswith((
        "SELECT user, folder, key, mailbox, guid, body, flags, size, internal_date FROM files "
        "INDEXED BY files_instance WHERE user = ? AND mailbox = ? AND guid = ? AND body = ?",
        "SELECT ? FROM files WHERE user = ? AND folder = ? AND key = ?",
        "SELECT file, offset, size FROM spool WHERE body = ?",
        "SELECT record FROM changes WHERE site = ?")))
    added = sum(n for shape, n in tracer.counts.items()
                if shape.startswith("INSERT OR REPLACE INTO files"))
    assert one_key * 10 < added, (one_key, added)


def test_the_instance_query_uses_its_index(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        seen: list[str] = []
        index.trace(seen.append)
        index.files_of_instance("u", "m", "g", "b")
        [statement] = seen
        assert index.explain(statement) == [
            "SEARCH files USING INDEX files_instance (user=? AND mailbox=? AND guid=? AND body=?)"]


def test_the_rows_of_many_keys_are_seeks_a_statement_at_a_time(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        seen: list[str] = []
        index.trace(seen.append)
        rows = [FileRow(user, f"f{n % 3}", f"k{n}", "m", f"g{n}", "b" * 64,
                        frozenset({"\\Seen"}) if n % 2 else frozenset(), n, 0)
                for user in ("u", "v") for n in range(10)]
        index.put_files(rows)
        wanted = [(f"f{n % 3}", f"k{n}") for n in range(index_module.KEYS_PER_STATEMENT + 3)]
        seen.clear()
        found = index.files_by_key("u", [*wanted, ("f0", "k1")])
        assert sorted(found, key=lambda r: r.size) == rows[:10]
        assert len(seen) == 2
        for statement in seen:
            assert [step for step in index.explain(statement)
                    if "CONSTANT ROWS" not in step] == BY_KEY_PLAN


def test_a_literal_is_normalised() -> None:
    assert normalise("SELECT 1 FROM t WHERE a = 'x''y' AND b = X'00ff' AND c = 12") == (
        "SELECT ? FROM t WHERE a = ? AND b = ? AND c = ?")


def test_the_export_plans_and_locates_bodies_with_seeks(tmp_path: Path) -> None:
    """A first export's bulk statements: the uncovered adds joined to their registers
    by primary key, and bodies looked up a list at a time by their indexes."""
    with StateIndex(tmp_path / "state.sqlite", create=True) as index:
        with index.transaction():
            index.add_change(added(A, 1), user=BOX.user, mailbox=BOX.guid,
                             body=f"{1:064x}")
        seen: list[str] = []
        index.trace(seen.append)
        ack = VersionVector.of({Stream(A, 1): 0})
        [add] = index.adds_not_covered(ack)
        assert (add.guid, add.alive) == (f"m{A[0]}1", False)  # no register: not alive
        index.bodies_known_to(["b1", "b2"], VersionVector.of({Stream(B, 1): 1}))
        index.places_of_bodies(["b1", "b2"])
        [adds] = [s for s in seen if "LEFT JOIN" in s]
        [known] = [s for s in seen if "FROM changes WHERE body IN" in s]
        [places] = [s for s in seen if "FROM files WHERE body IN" in s]
        plans = {name: index.explain(statement) for name, statement in
                 (("adds", adds), ("known", known), ("places", places))}
    assert plans == {
        "adds": ["SEARCH c USING PRIMARY KEY (site=? AND incarnation=? AND counter>?)",
                 "SEARCH m USING PRIMARY KEY (user=? AND mailbox=? AND guid=? AND body=?) "
                 "LEFT-JOIN"],
        "known": ["SEARCH changes USING COVERING INDEX changes_body (body=?)"],
        "places": ["SEARCH files USING INDEX files_body (body=?)"],
    }
