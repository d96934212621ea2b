"""The high-water mark kept outside the state index: a restored or emptied index is
noticed at the start of the next run, before anything is recorded or exported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bundlesync.cli import main
from bundlesync.errors import EXIT_LOCAL, StateError
from bundlesync.operations.demo import USERS
from bundlesync.operations.site import STATE_NAME, open_site, site_lock
from bundlesync.operations.spent import BLOCK, MARK_NAME, SpentMark, read_mark
from bundlesync.state.index import StateIndex
from tests.operations.conftest import Sites

ALICE = USERS[0]
INBOX = ("INBOX",)


def _exchange(sites: Sites, a: str, b: str, rounds: int = 1) -> None:
    for _ in range(rounds):
        sites.export(a)
        sites.import_(b)
        sites.export(b)
        sites.import_(a)


def _incarnation(sites: Sites, name: str) -> int:
    with site_lock(sites.homes[name]):
        site = open_site(sites.homes[name])
        try:
            return site.stream.incarnation
        finally:
            site.index.close()


def _has(sites: Sites, name: str, number: int, origin: str) -> bool:
    return any(m.key.endswith(f"M{number}P9.{origin}")
               for m in sites.stores[name].messages(ALICE, INBOX))


def _pair(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    _exchange(sites, "alpha", "bravo")


def test_the_mark_is_raised_in_blocks_before_counters_are_used(sites: Sites) -> None:
    _pair(sites)
    mark = read_mark(sites.homes["alpha"])
    assert mark is not None
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        try:
            counter = site.index.last_counter()
        finally:
            site.index.close()
    assert mark.committed == counter  # settled by the last run
    assert counter <= mark.reserved <= counter + BLOCK
    assert SpentMark("s", 1).reserve(5).reserved == 5 + BLOCK


def test_restored_state_index_moves_to_a_new_incarnation_before_exporting(
        sites: Sites) -> None:
    """Only state.sqlite is restored from an old copy (the mark beside it is current):
    the next run notices at once, and the mail delivered after the restore reaches
    the peer even though the peer has nothing new to say."""
    _pair(sites)
    home = sites.homes["bravo"]
    shutil.copy2(home / STATE_NAME, sites.root / "state-backup")
    for number in range(6001, 6004):
        sites.deliver("bravo", ALICE, INBOX, number)
        _exchange(sites, "bravo", "alpha")
    before = _incarnation(sites, "bravo")
    for suffix in ("-wal", "-shm"):
        (home / (STATE_NAME + suffix)).unlink(missing_ok=True)
    shutil.copy2(sites.root / "state-backup", home / STATE_NAME)
    sites.deliver("bravo", ALICE, INBOX, 6010)
    sites.export("bravo")
    assert _incarnation(sites, "bravo") > before
    sites.import_("alpha")
    assert _has(sites, "alpha", 6010, "bravo")
    _exchange(sites, "bravo", "alpha", rounds=2)
    assert sites.digest("alpha") == sites.digest("bravo")


def test_emptied_state_index_is_a_restore_not_a_new_site(sites: Sites) -> None:
    """state.sqlite replaced by an empty index: the site does not start over at its
    first incarnation; it takes a new one and the store's mail is recorded again."""
    _pair(sites)
    home = sites.homes["bravo"]
    sites.deliver("bravo", ALICE, INBOX, 6101)
    _exchange(sites, "bravo", "alpha")
    for suffix in ("", "-wal", "-shm"):
        (home / (STATE_NAME + suffix)).unlink(missing_ok=True)
    StateIndex(home / STATE_NAME, create=True).close()
    sites.deliver("bravo", ALICE, INBOX, 6102)
    _exchange(sites, "bravo", "alpha", rounds=2)
    assert _incarnation(sites, "bravo") > 1
    assert _has(sites, "alpha", 6102, "bravo")
    assert sites.digest("alpha") == sites.digest("bravo")


def test_zero_byte_state_index_is_refused(sites: Sites, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _pair(sites)
    home = sites.homes["bravo"]
    for suffix in ("-wal", "-shm"):
        (home / (STATE_NAME + suffix)).unlink(missing_ok=True)
    (home / STATE_NAME).write_bytes(b"")
    with site_lock(home), pytest.raises(StateError) as caught:
        open_site(home)
    assert "empty" in caught.value.message and caught.value.hint
    code = main(["--home", str(home), "export", str(sites.drop)])
    _out, err = capsys.readouterr()
    assert code == EXIT_LOCAL
    assert "empty (0 bytes)" in err
    assert (home / STATE_NAME).stat().st_size == 0  # nothing was changed


def test_a_sqlite_file_without_bundlesync_state_is_refused(sites: Sites) -> None:
    _pair(sites)
    home = sites.homes["bravo"]
    for suffix in ("", "-wal", "-shm"):
        (home / (STATE_NAME + suffix)).unlink(missing_ok=True)
    import sqlite3  # a database someone else made

    sqlite3.connect(home / STATE_NAME).execute("CREATE TABLE x (y)").connection.close()
    with site_lock(home), pytest.raises(StateError, match="no bundlesync state"):
        open_site(home)


def test_a_damaged_mark_is_refused_with_a_hint(sites: Sites) -> None:
    _pair(sites)
    home = sites.homes["bravo"]
    (home / MARK_NAME).write_text("{not json", encoding="utf-8")
    with site_lock(home), pytest.raises(StateError) as caught:
        open_site(home)
    assert caught.value.hint and "move the file away" in caught.value.hint


def test_a_mark_older_than_the_index_is_no_restore(sites: Sites) -> None:
    """The mark restored on its own (the index is newer): nothing can have been
    reused, so the site keeps its incarnation and the next run settles the mark."""
    _pair(sites)
    home = sites.homes["bravo"]
    old = (home / MARK_NAME).read_text(encoding="utf-8")
    for number in range(6201, 6203):
        sites.deliver("bravo", ALICE, INBOX, number)
        _exchange(sites, "bravo", "alpha")
    (home / MARK_NAME).write_text(old, encoding="utf-8")
    assert _incarnation(sites, "bravo") == 1
    sites.export("bravo")
    mark = read_mark(home)
    assert mark is not None and mark.incarnation == 1
    assert mark.committed > json.loads(old)["committed"]
