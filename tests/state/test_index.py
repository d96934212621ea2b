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


def test_a_version_4_log_is_migrated_and_its_adds_planned_by_their_records(
        tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    for version in range(1, 5):
        db.executescript(MIGRATIONS[version])
    db.execute("PRAGMA user_version = 4")
    old = added(A, 1)
    db.execute("INSERT INTO changes VALUES (?, 1, 1, 'alice', ?, 'message-added', ?, ?)",
               (A, BOX.guid, f"{1:064x}", encode_change(old)))
    db.commit()
    db.close()
    with StateIndex(path) as index:
        log(index, added(A, 2))
        first, second = index.adds_not_covered(VersionVector.of({}))
    # Logged before the column: the record, to be decoded; logged after: the GUID.
    assert (first.guid, first.alive, decode_change(first.record)) == (None, None, old)
    assert (second.guid, second.alive, second.record) == (f"m{A[0]}2", False, b"")
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


def test_the_counter_and_clock_are_written_once_per_transaction(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        seen: list[str] = []
        index.trace(seen.append)
        with index.transaction():
            for n in range(1, 51):
                assert index.next_counter() == n
                index.save_clock(1000 + n, n)
        index.trace(None)
        # One read of the counter, and one write of each of the three keys at COMMIT
        # (not three statements for each of the 50 changes).
        assert sum("meta" in s for s in seen) == 4
        assert index.last_counter() == 50 and index.clock() == (1050, 50)


def spend_then_fail(index: StateIndex) -> None:
    with index.transaction():
        index.next_counter()
        raise RuntimeError


def test_a_rolled_back_savepoint_gives_its_counters_back(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        with index.transaction():
            assert index.next_counter() == 1
            with pytest.raises(RuntimeError):
                spend_then_fail(index)
            assert index.next_counter() == 2
        assert index.last_counter() == 2
        with pytest.raises(RuntimeError):
            spend_then_fail(index)
        assert index.last_counter() == 2
        with index.rehearsal():
            assert index.next_counter() == 3
        assert index.last_counter() == 2


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


# -- bulk lookups for the ledger ----------------------------------------------------------


def test_known_counters_reads_a_range_of_dots_at_once(tmp_path: Path) -> None:
    with StateIndex(tmp_path / "s", create=True) as index:
        log(index, added(A, 2), added(A, 3), added(A, 7), added(B, 4))
        seen: list[str] = []
        index.trace(seen.append)
        assert index.known_counters(Stream(A, 1), 1, 5) == {2, 3}
        assert index.known_counters(Stream(A, 1), 4, 9) == {7}
        assert index.known_counters(Stream(B, 1), 1, 9) == {4}
        assert index.known_counters(Stream(A, 2), 1, 9) == set()
        assert len(seen) == 4


def _live_state(index: StateIndex, mailbox: str, guid: str, *, alive: bool) -> None:
    index.store_message("alice", mailbox, guid, "0" * 64, alive=alive, state=b"x")


def test_live_mailboxes_are_looked_up_once_per_transaction_and_kept_current(
        tmp_path: Path) -> None:
    one, two = "1" * 32, "2" * 32
    with StateIndex(tmp_path / "s", create=True) as index:
        with index.transaction():
            _live_state(index, one, "a", alive=True)
            _live_state(index, one, "b", alive=True)
        seen: list[str] = []
        index.trace(seen.append)
        with index.transaction():
            assert index.live_mailboxes("alice") == {one}
            looked_up = len(seen)
            assert index.live_mailboxes("alice") == {one}
            assert len(seen) == looked_up  # served from what the transaction knows
            _live_state(index, two, "c", alive=True)
            assert index.live_mailboxes("alice") == {one, two}
            _live_state(index, one, "a", alive=False)
            assert index.live_mailboxes("alice") == {one, two}  # "b" is still alive
            _live_state(index, one, "b", alive=False)
            assert index.live_mailboxes("alice") == {two}
        index.trace(None)
        # Outside a transaction, and in the next one, the database answers.
        assert index.live_mailboxes("alice") == {two}


def test_a_rolled_back_savepoint_forgets_the_live_mailboxes_it_saw(tmp_path: Path) -> None:
    one, two = "1" * 32, "2" * 32
    with StateIndex(tmp_path / "s", create=True) as index, index.transaction():
        _live_state(index, one, "a", alive=True)
        assert index.live_mailboxes("alice") == {one}
        with pytest.raises(RuntimeError):
            _add_live_then_fail(index, two)
        assert index.live_mailboxes("alice") == {one}


def _add_live_then_fail(index: StateIndex, mailbox: str) -> None:
    with index.transaction():
        _live_state(index, mailbox, "b", alive=True)
        assert mailbox in index.live_mailboxes("alice")
        raise RuntimeError


def test_messages_stored_in_bulk_are_seen_by_the_live_mailboxes(tmp_path: Path) -> None:
    one, two = "1" * 32, "2" * 32
    with StateIndex(tmp_path / "s", create=True) as index, index.transaction():
        _live_state(index, one, "a", alive=True)
        assert index.live_mailboxes("alice") == {one}
        index.store_messages([("alice", two, "b", "0" * 64, True, b"x")])
        assert index.live_mailboxes("alice") == {one, two}
