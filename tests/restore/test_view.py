"""The Backups view on disk: layout, shared bodies, and refreshes that touch only changed dates."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from bundlesync.archive.view import SINGLE_USER, dovecot_config, refresh_view
from bundlesync.core.model import SEEN
from bundlesync.errors import LockHeld, StoreError, UsageError
from bundlesync.stores.base import INBOX
from bundlesync.stores.memory import MemoryStore
from tests.restore.source import MemorySource, day_ms

USER = "alice@example.org"


def mail(number: int) -> bytes:
    return f"Message-ID: <w{number}@example.org>\nSubject: {number}\n\nBody {number}.\n".encode()


def deliver(store: MemoryStore, number: int, *, flags: frozenset[str] = frozenset()) -> None:
    store.add_message(USER, INBOX, key=f"17000000{number:02d}.M1P1.a", data=mail(number),
                      flags=flags, internal_date=1_700_000_000 + number)


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.ensure_user(USER)
    store.create_folder(USER, ("Archive", "Zürich"), guid=None, uidvalidity=None)
    deliver(store, 1, flags=frozenset({SEEN, "Work"}))
    deliver(store, 2)
    return store


def tree(view: Path) -> dict[str, int]:
    """Relative path -> inode of everything below users/ and control/."""
    return {str(p.relative_to(view)): p.stat().st_ino
            for part in ("users", "control") for p in sorted((view / part).rglob("*"))}


def test_each_date_is_a_maildir_tree_whose_bodies_are_shared(
    store: MemoryStore, tmp_path: Path
) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"),
                uids={(USER, INBOX, "1700000001.M1P1.a"): 10,
                      (USER, INBOX, "1700000002.M1P1.a"): 11},
                mailbox_uids={(USER, INBOX): (555, 12)})
    deliver(store, 3)
    source.take(store, day_ms("2026-11-02"))
    view = tmp_path / "view"
    report = refresh_view(source, str(view))
    assert report.added == ((USER, "2026-11-01"), (USER, "2026-11-02"))
    day1 = view / "users" / USER / "2026-11-01"
    day2 = view / "users" / USER / "2026-11-02"
    control1 = view / "control" / USER / "2026-11-01"
    assert sorted(p.name for p in (day1 / "INBOX" / "cur").iterdir()) == [
        "1700000001.M1P1.a:2,Sa", "1700000002.M1P1.a:2,"]
    # The UIDs and keywords are in the control tree, not in the read-only Maildir.
    assert sorted(p.name for p in (day1 / "INBOX").iterdir()) == ["cur", "new", "tmp"]
    assert (control1 / "INBOX" / "dovecot-keywords").read_text() == "0 Work\n"
    assert (control1 / "INBOX" / "dovecot-uidlist").read_text().splitlines()[1:] == [
        "10 :1700000001.M1P1.a", "11 :1700000002.M1P1.a"]
    assert (control1 / "INBOX" / "dovecot-uidlist").read_text().startswith("3 V555 N12 ")
    assert (day1 / "Archive" / "Z&APw-rich" / "cur").is_dir()
    assert (control1 / "Archive" / "Z&APw-rich" / "dovecot-uidlist").is_file()
    # Read-only messages; a control directory per folder the mail group may write
    # (Dovecot's uidlist lock, its index), and the user's control root (its list lock).
    modes = {str(p.relative_to(view)): stat.S_IMODE(p.stat().st_mode)
             for p in [*view.rglob("*")] if p.is_dir() and "pool" not in p.parts}
    writable = {f"control/{USER}", f"control/{USER}/2026-11-01/INBOX",
                f"control/{USER}/2026-11-02/INBOX", f"control/{USER}/2026-11-01/Archive/Z&APw-rich",
                f"control/{USER}/2026-11-02/Archive/Z&APw-rich"}
    assert {path for path, mode in modes.items() if mode == 0o770} == writable
    assert all(mode == 0o750 for path, mode in modes.items() if path not in writable)
    assert stat.S_IMODE((control1 / "INBOX" / "dovecot-uidlist").stat().st_mode) == 0o660
    # One body, one file: the same message on both dates is one inode, linked twice.
    first = (day1 / "INBOX" / "cur" / "1700000002.M1P1.a:2,").stat()
    second = (day2 / "INBOX" / "cur" / "1700000002.M1P1.a:2,").stat()
    assert first.st_ino == second.st_ino and first.st_nlink == 3  # two dates + the pool
    assert int(first.st_mtime) == 1_700_000_002  # Dovecot's received date
    assert stat.S_IMODE(first.st_mode) == 0o440
    assert (day2 / "INBOX" / "cur" / "1700000003.M1P1.a:2,").read_bytes() == mail(3)
    assert len(list((view / "pool").rglob("*.*"))) == 3


def test_a_refresh_adds_and_removes_only_the_dates_that_changed(
    store: MemoryStore, tmp_path: Path
) -> None:
    source = MemorySource()
    first = source.take(store, day_ms("2026-11-01"))
    deliver(store, 3)
    source.take(store, day_ms("2026-11-02"))
    view = tmp_path / "view"
    refresh_view(source, str(view))
    before = tree(view)

    assert refresh_view(source, str(view)).added == ()  # nothing new: nothing touched
    assert tree(view) == before

    deliver(store, 4)
    source.take(store, day_ms("2026-11-03"))
    report = refresh_view(source, str(view))
    assert (report.added, report.removed) == (((USER, "2026-11-03"),), ())
    after = tree(view)
    assert {k: v for k, v in after.items() if "2026-11-03" not in k} == before

    assert (view / "control" / USER / "2026-11-03" / "INBOX" / "dovecot-uidlist").is_file()

    source.forget(first.id)
    report = refresh_view(source, str(view))
    assert (report.added, report.removed) == ((), ((USER, "2026-11-01"),))
    assert tree(view) == {
        k: v for k, v in after.items() if "2026-11-01" not in k}
    assert sorted(os.listdir(view / "control" / USER)) == ["2026-11-02", "2026-11-03"]
    # Every pool file is still linked from some date.
    assert all(p.stat().st_nlink > 1 for p in (view / "pool").rglob("*.*"))


def test_a_later_snapshot_of_the_same_day_replaces_that_date_only(
    store: MemoryStore, tmp_path: Path
) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01", hour=8))
    source.take(store, day_ms("2026-11-02", hour=8))
    view = tmp_path / "view"
    refresh_view(source, str(view))
    before = tree(view)
    deliver(store, 5)
    source.take(store, day_ms("2026-11-02", hour=20))
    report = refresh_view(source, str(view))
    assert report.added == ((USER, "2026-11-02"),) and report.removed == ()
    assert (view / "users" / USER / "2026-11-02" / "INBOX" / "cur" / "1700000005.M1P1.a:2,"
            ).exists()
    assert {k: v for k, v in tree(view).items() if "2026-11-01" in k} == {
        k: v for k, v in before.items() if "2026-11-01" in k}


def test_at_limits_the_view_and_debris_of_an_interrupted_refresh_is_cleared(
    store: MemoryStore, tmp_path: Path
) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"))
    source.take(store, day_ms("2026-11-02"))
    view = tmp_path / "view"
    (view / "tmp" / "building.x.2026-11-09" / "INBOX").mkdir(parents=True)
    report = refresh_view(source, str(view), at=["2026-11-01"])
    assert report.added == ((USER, "2026-11-01"),)
    assert os.listdir(view / "tmp") == []
    assert sorted(os.listdir(view / "users" / USER)) == ["2026-11-01"]


def test_a_single_user_archive_has_its_own_directory_and_config(tmp_path: Path) -> None:
    store = MemoryStore()
    store.ensure_user("")
    store.add_message("", INBOX, key="k1", data=mail(1), flags=frozenset(), internal_date=1)
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"))
    view = tmp_path / "view"
    refresh_view(source, str(view))
    assert (view / "users" / SINGLE_USER / "2026-11-01" / "INBOX" / "cur" / "k1:2,").exists()
    config = dovecot_config(str(view), single_user=True)
    control = f"{view}/control/{SINGLE_USER}"
    assert (f"location = maildir:{view}/users/{SINGLE_USER}:LAYOUT=fs:CONTROL={control}"
            f":INDEX={control}\n") in config
    assert (view / "dovecot-acl").read_text() == "Backups.* owner lr\n"


def test_a_view_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "view").write_text("not a directory")
    with pytest.raises(UsageError, match="not a directory"):
        refresh_view(MemorySource(), str(tmp_path / "view"))


def test_a_date_on_disk_the_manifest_lost_is_rebuilt(store: MemoryStore, tmp_path: Path) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"))
    view = tmp_path / "view"
    refresh_view(source, str(view))
    (view / "view.json").unlink()  # as if killed between the rename and the manifest write
    report = refresh_view(source, str(view))
    assert report.added == ((USER, "2026-11-01"),)
    assert len(list((view / "users" / USER / "2026-11-01" / "INBOX" / "cur").iterdir())) == 2


def test_a_body_linked_as_often_as_the_file_system_allows_is_copied(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"))
    real_link = os.link

    def full_link(source_path: str, target: str) -> None:
        if "/cur/" in target:
            raise OSError(errno.EMLINK, "Too many links")
        real_link(source_path, target)

    monkeypatch.setattr(os, "link", full_link)
    refresh_view(source, str(tmp_path / "view"))
    inbox = tmp_path / "view" / "users" / USER / "2026-11-01" / "INBOX"
    copy = inbox / "cur" / "1700000002.M1P1.a:2,"
    assert copy.read_bytes() == mail(2) and copy.stat().st_nlink == 1
    assert int(copy.stat().st_mtime) == 1_700_000_002


def test_a_second_refresh_while_one_runs_is_refused(store: MemoryStore, tmp_path: Path) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"))
    view = tmp_path / "view"
    view.mkdir()
    (view / "view.lock").write_text(f"{os.getpid()}:{socket.gethostname()}")
    with pytest.raises(LockHeld, match="another 'bundlesync view'"):
        refresh_view(source, str(view))
    assert not (view / "users").exists()
    (view / "view.lock").unlink()
    assert refresh_view(source, str(view)).added == ((USER, "2026-11-01"),)


def test_something_dovecot_wrote_in_the_control_tree_stays_until_its_date_changes(
    store: MemoryStore, tmp_path: Path
) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"))
    view = tmp_path / "view"
    refresh_view(source, str(view))
    index = view / "control" / USER / "2026-11-01" / "INBOX" / "dovecot.index"
    index.write_bytes(b"Dovecot's index")  # as Dovecot leaves it after a SELECT
    assert refresh_view(source, str(view)).added == ()
    assert index.read_bytes() == b"Dovecot's index"
    deliver(store, 6)
    source.take(store, day_ms("2026-11-01", hour=20))
    assert refresh_view(source, str(view)).added == ((USER, "2026-11-01"),)
    # The new snapshot's UIDs come with a fresh control directory: no stale index.
    assert not index.exists()
    assert len((index.parent / "dovecot-uidlist").read_text().splitlines()) == 1 + 3


def test_a_view_of_the_first_layout_is_rebuilt_with_a_control_tree(
    store: MemoryStore, tmp_path: Path
) -> None:
    source = MemorySource()
    snapshot = source.take(store, day_ms("2026-11-01"))
    view = tmp_path / "view"
    refresh_view(source, str(view))
    # The first layout: the uidlist inside the read-only Maildir, no control/ tree.
    inbox = view / "users" / USER / "2026-11-01" / "INBOX"
    control = view / "control" / USER / "2026-11-01"
    (control / "INBOX" / "dovecot-uidlist").rename(inbox / "dovecot-uidlist")
    for path in sorted(control.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    control.rmdir()
    (view / "view.json").write_text(
        json.dumps({"version": 1, "users": {USER: {"2026-11-01": snapshot.id}}}))
    pool_inodes = {p.stat().st_ino for p in (view / "pool").rglob("*.*")}

    report = refresh_view(source, str(view))
    assert report.upgraded and report.added == ((USER, "2026-11-01"),)
    assert "--dovecot-config" in report.lines()[0]
    assert not (inbox / "dovecot-uidlist").exists()
    assert (control / "INBOX" / "dovecot-uidlist").is_file()
    # The bodies are the pool's, linked again, not written again.
    assert {p.stat().st_ino for p in (inbox / "cur").iterdir()} <= pool_inodes
    assert '"version": 2' in (view / "view.json").read_text()
    assert not refresh_view(source, str(view)).upgraded


def test_a_view_of_a_newer_layout_is_refused(store: MemoryStore, tmp_path: Path) -> None:
    source = MemorySource()
    source.take(store, day_ms("2026-11-01"))
    view = tmp_path / "view"
    view.mkdir()
    (view / "view.json").write_text('{"version": 3, "users": {}}')
    with pytest.raises(StoreError, match="newer bundlesync") as caught:
        refresh_view(source, str(view))
    assert "delete the view directory" in (caught.value.hint or "")
    assert sorted(os.listdir(view)) == ["view.json"]
