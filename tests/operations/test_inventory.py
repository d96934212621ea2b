"""The inventory ``init`` takes: folded in bulk, the same registers and log as one
change at a time, and nothing left for the first export to re-apply."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bundlesync.core.model import (
    Change,
    Dot,
    MailboxRef,
    MessageAdded,
    MessageRef,
)
from bundlesync.core.state import apply_to_message, inventory_timestamp
from bundlesync.errors import StateError
from bundlesync.operations import scan
from bundlesync.operations.inventory import InventoryWritten, fold_adds
from bundlesync.operations.ledger import fold_change, load_message
from bundlesync.operations.site import STATE_NAME, open_site, site_lock
from bundlesync.state.codec import decode_change
from bundlesync.state.index import StateIndex
from tests.operations.conftest import Sites


def _rows(path: Path, query: str) -> set[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return {tuple(row) for row in db.execute(query)}


MESSAGES = "SELECT user, mailbox, guid, body, alive, state FROM messages"
CHANGES = "SELECT site, incarnation, counter, user, mailbox, kind, body, record FROM changes"


@pytest.mark.parametrize("batch", [scan.ADD_BATCH, 3])
def test_the_bulk_inventory_equals_folding_each_change(sites: Sites, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       batch: int) -> None:
    # Recorded a few new files at a time (as a huge folder is), the inventory is the same.
    monkeypatch.setattr(scan, "ADD_BATCH", batch)
    sites.add("alpha", populate_per_folder=4)
    state = sites.homes["alpha"] / STATE_NAME
    logged = _rows(state, CHANGES)
    assert sum(1 for row in logged if row[5] == "message-added") > 20
    # The same changes, folded one at a time through the ledger into an empty index.
    again = tmp_path / "again.sqlite"
    with StateIndex(again, create=True) as index, index.transaction():
        for row in sorted(logged, key=lambda r: r[2]):  # type: ignore[arg-type,return-value]
            assert fold_change(index, decode_change(bytes(row[7])))  # type: ignore[arg-type]
    assert _rows(again, MESSAGES) == _rows(state, MESSAGES)
    assert _rows(again, CHANGES) == logged


def test_init_leaves_no_message_pending_and_the_first_export_changes_nothing(
        sites: Sites) -> None:
    store = sites.add("alpha", populate_per_folder=3)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        try:
            assert site.index.count_pending() == 0
            users = site.index.pending_users()  # the folder tree is still checked once
        finally:
            site.index.close()
    assert users
    before = sites.digest("alpha")
    names = {p.name for p in Path(store.location.static_root).rglob("*") if p.is_file()}
    result = sites.export("alpha")
    assert result.bundles[0].bodies == sum(len(v) for v in before.values())  # type: ignore[attr-defined]
    assert sites.digest("alpha") == before
    assert {p.name for p in Path(store.location.static_root).rglob("*") if p.is_file()} == names
    sites.import_("bravo")
    assert sites.digest("bravo") == before


def test_two_adds_of_one_instance_fold_into_one_register(sites: Sites) -> None:
    sites.add("alpha")
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        try:
            stamp = inventory_timestamp(site.site_id)
            ref = MessageRef(MailboxRef("someone@example.org", "ab" * 16), "m1", "cd" * 32)
            first = Change(Dot(site.site_id, 1, 1001), stamp,
                           MessageAdded(ref, 10, 0, frozenset({"\\Seen"})))
            second = Change(Dot(site.site_id, 1, 1002), stamp,
                            MessageAdded(ref, 10, 0, frozenset({"\\Flagged"})))
            with site.index.transaction():
                fold_adds(site, [first, second])
            assert load_message(site.index, ref) == apply_to_message(
                apply_to_message(None, first), second)
            assert site.index.count_pending() == 0
            # A user already known: the register is read and joined, not replaced.
            third = Change(Dot(site.site_id, 1, 1003), stamp,
                           MessageAdded(ref, 10, 0, frozenset({"$Label1"})))
            with site.index.transaction():
                fold_adds(site, [third])
            assert load_message(site.index, ref) == apply_to_message(
                apply_to_message(apply_to_message(None, first), second), third)
        finally:
            site.index.close()


def test_an_instance_added_again_in_a_later_batch_joins_the_register(sites: Sites) -> None:
    # A fresh user's later batch reads a register only where an earlier batch of the
    # same inventory wrote one: this one must be found and joined, not replaced.
    sites.add("alpha")
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        try:
            stamp = inventory_timestamp(site.site_id)
            box = MailboxRef("fresh@example.org", "ab" * 16)
            ref, other = MessageRef(box, "m1", "cd" * 32), MessageRef(box, "m2", "ef" * 32)
            first = Change(Dot(site.site_id, 1, 1001), stamp,
                           MessageAdded(ref, 10, 0, frozenset({"\\Seen"})))
            unrelated = Change(Dot(site.site_id, 1, 1002), stamp,
                               MessageAdded(other, 10, 0, frozenset()))
            again = Change(Dot(site.site_id, 1, 1003), stamp,
                           MessageAdded(ref, 10, 0, frozenset({"\\Flagged"})))
            written = InventoryWritten()
            with site.index.transaction():
                fold_adds(site, [first], written=written)
                fold_adds(site, [unrelated, again], written=written)
            assert load_message(site.index, ref) == apply_to_message(
                apply_to_message(None, first), again)
            assert load_message(site.index, other) == apply_to_message(None, unrelated)
        finally:
            site.index.close()


def test_a_damaged_change_in_the_log_is_refused_before_anything_is_sent(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    state = sites.homes["alpha"] / STATE_NAME
    with sqlite3.connect(state) as db:
        db.execute("UPDATE changes SET record = ? WHERE counter = "
                   "(SELECT MAX(counter) FROM changes)", (b"\x00garbage",))
    db.close()
    with pytest.raises(StateError, match="damaged change record"):
        sites.export("alpha")
    assert not [p for p in sites.drop.iterdir() if p.suffix == ".bsb"]
