"""The state index's repository methods, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bundlesync.core.model import (
    Change,
    Dot,
    MailboxCreated,
    MailboxRef,
    MessageAdded,
    MessageRef,
    Stream,
    Timestamp,
    VersionVector,
)
from bundlesync.errors import StateError
from bundlesync.state.codec import decode_change, encode_change
from bundlesync.state.index import MIGRATIONS, SCHEMA_VERSION, StateIndex

A = "a" * 32
B = "b" * 32
BOX = MailboxRef("alice", "1" * 32)


def added(site: str, counter: int) -> Change:
    ref = MessageRef(BOX, f"m{site[0]}{counter}", f"{counter:064x}")
    return Change(Dot(site, 1, counter), Timestamp(counter, 0, site),
                  MessageAdded(ref, 10, 1_700_000_000, frozenset()))


def created(site: str, counter: int) -> Change:
    return Change(Dot(site, 1, counter), Timestamp(counter, 0, site),
                  MailboxCreated(BOX, None, "INBOX", 7))


def log(index: StateIndex, *changes: Change) -> None:
    with index.transaction():
        for change in changes:
            body = change.op.message.body if isinstance(change.op, MessageAdded) else None
            index.add_change(change, user="alice", mailbox=BOX.guid, body=body)


def test_a_version_3_log_is_migrated_to_stable_kind_names(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    for version in range(1, 4):
        db.executescript(MIGRATIONS[version])
    db.execute("PRAGMA user_version = 3")
    for counter, (change, kind) in enumerate(
            [(created(A, 1), "MailboxCreated"), (added(A, 2), "MessageAdded")], start=1):
        db.execute("INSERT INTO changes VALUES (?, 1, ?, 'alice', ?, ?, NULL, ?)",
                   (A, counter, BOX.guid, kind, encode_change(change)))
    db.commit()
    db.close()
    with StateIndex(path) as index:
        assert index.kinds_not_covered(VersionVector.of({})) == {
            "mailbox-created": 1, "message-added": 1}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_new_changes_are_logged_under_the_format_kind(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        log(index, created(A, 1), added(A, 2), added(A, 3))
        assert index.kinds_not_covered(VersionVector.of({Stream(A, 1): 1})) == {
            "message-added": 2}
        assert index.count_not_covered(VersionVector.of({Stream(A, 1): 2})) == 1


def test_two_readers_of_the_log_may_interleave(tmp_path: Path) -> None:
    # Each call reads the log on its own; nothing shared is rewritten by the second.
    with StateIndex(tmp_path / "s", create=True) as index:
        log(index, *(added(A, n) for n in range(1, 6)), *(added(B, n) for n in range(1, 4)))
        everything = index.changes_not_covered(VersionVector.of({}))
        first = next(everything)
        late = list(index.changes_not_covered(VersionVector.of({Stream(A, 1): 5})))
        rest = list(everything)
    assert [c.dot for c in late] == [Dot(B, 1, n) for n in range(1, 4)]
    assert [first.dot, *(c.dot for c in rest)] == (
        [Dot(A, 1, n) for n in range(1, 6)] + [Dot(B, 1, n) for n in range(1, 4)])
    assert decode_change(first.record) == added(A, 1)
    assert first.body == added(A, 1).op.message.body  # type: ignore[union-attr]


def test_the_site_counters_are_typed(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        assert (index.incarnation(), index.last_counter(), index.clock()) == (1, 0, None)
        with index.transaction():
            assert [index.next_counter() for _ in range(3)] == [1, 2, 3]
            index.save_clock(1_700_000_000_000, 4)
        assert index.clock() == (1_700_000_000_000, 4)
        with index.transaction():
            index.start_incarnation(5)
        assert (index.incarnation(), index.last_counter()) == (5, 0)
        assert [index.reserve_bundle_seq(B, 5) for _ in range(2)] == [1, 2]
        assert index.reserve_bundle_seq(B, 6) == 1


def test_a_damaged_counter_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    StateIndex(path, create=True).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO meta VALUES ('counter', 'many')")
    db.commit()
    db.close()
    with StateIndex(path) as index, pytest.raises(StateError, match="counter"):
        index.next_counter()


def test_a_rehearsal_keeps_nothing(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        with index.rehearsal():
            log(index, added(A, 1))
            with index.transaction():
                index.want("f" * 64)
            assert index.count_changes() == 1
        assert index.count_changes() == 0
        assert index.wanted() == []


def test_the_distinct_readers_see_every_user(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        with index.transaction():
            for user in ("carol", "", "bob"):
                index.mark_pending(user, "m", "g", "b")
            index.mark_user_pending("dave")
            index.store_message("bob", "x", "g", "b", alive=True, state=b"")
            index.store_message("bob", "y", "g", "b", alive=False, state=b"")
            index.store_message("bob", "z", "g", "b", alive=True, state=b"")
        assert index.pending_users() == ["", "bob", "carol", "dave"]
        assert index.live_mailboxes("bob") == {"x", "z"}
        assert index.live_mailboxes("carol") == set()
        assert index.has_pending()


def test_a_database_failure_inside_a_transaction_is_a_state_error(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        log(index, added(A, 1))

        def twice() -> None:
            with index.transaction():
                log(index, added(A, 2))
                log(index, added(A, 2))  # the same dot twice: the database refuses it

        with pytest.raises(StateError, match="could not be written"):
            twice()
        assert index.count_changes() == 1
