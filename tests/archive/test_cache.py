"""The backup's local cache (bundlesync.archive.cache): an index mirror and the newest
snapshot's listings, validated against the archive and never trusted over it.

Each case ends with the same proof: the newest snapshot equals the store, every body
it names is in the archive (check --read-data), whatever state the cache was in.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import zstandard

from bundlesync.archive.backup import BackupReport, run_backup
from bundlesync.archive.cache import BackupCache, cache_path
from bundlesync.archive.check import check_archive
from bundlesync.archive.prune import prune
from bundlesync.archive.repository import Archive, create_archive, open_archive
from bundlesync.archive.secrets import Passphrase
from bundlesync.archive.users import UserSelection
from bundlesync.operations.config import MailboxFilter
from bundlesync.operations.demo import demo_message, populate
from bundlesync.state.archive_cache import ArchiveCacheDb, listings_dir
from bundlesync.stores.base import INBOX
from tests.archive.conftest import KDF_LOG_N, PASSPHRASE, Backups, tick
from tests.archive.views import snapshot_view, store_view

USER = "alice@example.org"


class Counted:
    """An opened archive whose index-file and pack reads are counted."""

    def __init__(self, backups: Backups) -> None:
        self.archive = open_archive(backups.path, secret=backups.identity)
        self.index_reads: list[str] = []
        self.blob_reads = 0
        real_index, real_blob = self.archive.read_index_raw, self.archive.read_blob_at

        def index(name: str) -> object:
            self.index_reads.append(name)
            return real_index(name)

        def blob(ref: object) -> bytes:
            self.blob_reads += 1
            return real_blob(ref)  # type: ignore[arg-type]

        self.archive.read_index_raw = index  # type: ignore[method-assign,assignment]
        self.archive.read_blob_at = blob  # type: ignore[method-assign,assignment]


def _backup(backups: Backups, cache: Path | None, *, archive: Archive | None = None
            ) -> BackupReport:
    opened = archive or open_archive(backups.path, secret=backups.identity)
    return run_backup(opened, backups.store, users=UserSelection(), filters=MailboxFilter(),
                      now_ms=tick(), cache_dir=cache, cache_rows=_rows(cache, opened))


def _rows(cache: Path | None, archive: Archive) -> ArchiveCacheDb | None:
    """The cache as the command line opens it (None: in memory for the run)."""
    return ArchiveCacheDb.open(cache_path(cache, archive)) if cache is not None else None


def _assert_newest_is_the_store(backups: Backups) -> None:
    reader = backups.reader()
    assert snapshot_view(reader, reader.snapshots()[-1].id) == store_view(backups.store)
    report = check_archive(backups.reader(), read_data=True)
    assert report.ok, report.problems


def _add(backups: Backups, number: int, *, user: str = USER) -> None:
    data, _date = demo_message(user, 40_000 + number)  # a body populate() never makes
    backups.store.add_message(user, INBOX, key=f"17000{number:05d}.M{number}P1.host",
                              data=data, flags=frozenset(), internal_date=1_700_000_000)


def _touch_every_folder(backups: Backups, number: int) -> None:
    for user in backups.store.users():
        for info in backups.store.folders(user):
            data, _date = demo_message(user, 40_000 + number)
            number += 1
            backups.store.add_message(user, info.path, key=f"18000{number:05d}.M{number}P2.h",
                                      data=data, flags=frozenset(),
                                      internal_date=1_700_000_000)


def test_a_warm_cache_reads_no_index_file_and_no_listing_from_the_archive(
        backups: Backups, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=3)
    _backup(backups, cache)
    assert cache_path(cache, backups.archive).is_file()
    _touch_every_folder(backups, 500)
    counted = Counted(backups)
    report = _backup(backups, cache, archive=counted.archive)
    assert report.folders_listed == report.folders > 0
    # Every previous listing came from the cache (checked by hash), no index was read.
    assert counted.index_reads == [] and counted.blob_reads == 0
    _assert_newest_is_the_store(backups)


def test_a_missing_cache_is_rebuilt_from_the_archive(backups: Backups, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=3)
    _backup(backups, cache)
    shutil.rmtree(cache)
    _touch_every_folder(backups, 600)
    counted = Counted(backups)
    report = _backup(backups, cache, archive=counted.archive)
    assert len(counted.index_reads) == len(counted.archive.index_names()) - 1  # all but new
    assert counted.blob_reads > 0  # listings from the packs this time
    assert report.bodies_added == report.folders  # the old bodies were found: not again
    _assert_newest_is_the_store(backups)


def test_a_cache_behind_the_archive_reads_only_the_new_index_files(
        backups: Backups, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=3)
    _backup(backups, cache)
    _add(backups, 1)
    _backup(backups, None)  # a run without this cache adds an index file it never saw
    _add(backups, 2)
    counted = Counted(backups)
    report = _backup(backups, cache, archive=counted.archive)
    assert len(counted.index_reads) == 1
    assert report.bodies_added == 1  # message 1 is known from the index file just read
    _assert_newest_is_the_store(backups)


def test_after_prune_the_cache_is_rebuilt_and_a_pruned_body_is_stored_again(
        backups: Backups, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)
    _add(backups, 7)
    _backup(backups, cache)
    data, _date = demo_message(USER, 40_007)
    [key] = [m.key for m in backups.store.messages(USER, INBOX) if m.key.startswith("1700000007")]
    backups.store.expunge(USER, INBOX, key)
    _backup(backups, cache)
    archive = open_archive(backups.path, secret=backups.identity)
    archive.forget_snapshot(archive.snapshots()[0].id)
    prune(archive)  # message 7's body is gone from the archive, not from the cache's rows
    backups.store.add_message(USER, INBOX, key=key, data=data, flags=frozenset(),
                              internal_date=1_700_000_000)
    opened = open_archive(backups.path, secret=backups.identity)
    checked = BackupCache.open(opened, _rows(cache, opened))
    assert checked.rebuilt
    checked.close()
    report = _backup(backups, cache)
    assert report.bodies_added == 1
    _assert_newest_is_the_store(backups)


def test_a_corrupt_cache_file_is_deleted_and_rebuilt(backups: Backups, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)
    _backup(backups, cache)
    path = cache_path(cache, backups.archive)
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    _touch_every_folder(backups, 700)
    report = _backup(backups, cache)
    assert report.bodies_added == report.folders
    with sqlite3.connect(path) as db:  # a sound cache again
        assert db.execute("SELECT count(*) FROM index_files").fetchone()[0] >= 2
    _assert_newest_is_the_store(backups)


def test_a_listing_that_does_not_match_its_id_is_read_from_the_archive(
        backups: Backups, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)
    _backup(backups, cache)
    files = list(listings_dir(cache_path(cache, backups.archive)).iterdir())
    ids = [bytes.fromhex(f.name) for f in files]
    assert ids
    for file in files:  # a listing claiming an empty folder under every tree id
        file.write_bytes(zstandard.ZstdCompressor(level=1).compress(b"\x80"))
    _touch_every_folder(backups, 800)
    counted = Counted(backups)
    report = _backup(backups, cache, archive=counted.archive)
    assert counted.blob_reads >= len(ids)
    assert report.bodies_added == report.folders  # the old messages kept their bodies
    _assert_newest_is_the_store(backups)


def test_the_cache_of_another_archive_is_never_used(backups: Backups, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)
    _add(backups, 9)
    _backup(backups, cache)  # archive A: knows message 9's body
    other = create_archive(tmp_path / "other", identity=backups.identity,
                           recovery=[Passphrase(PASSPHRASE)], kdf_log_n=KDF_LOG_N)
    # B's cache file is a copy of A's: it claims bodies B does not hold.
    shutil.copy(cache_path(cache, backups.archive), cache_path(cache, other))
    opened = open_archive(other.root, secret=backups.identity)
    checked = BackupCache.open(opened, _rows(cache, opened))
    assert checked.rebuilt and not checked.has_body(b"\x00" * 32)
    checked.close()
    report = run_backup(opened, backups.store, users=UserSelection(), filters=MailboxFilter(),
                        now_ms=tick(), cache_dir=cache, cache_rows=_rows(cache, opened))
    assert report.bodies_added == report.messages  # all of them, message 9 included
    reader = open_archive(other.root, secret=Passphrase(PASSPHRASE))
    assert snapshot_view(reader, reader.snapshots()[-1].id) == store_view(backups.store)
    assert check_archive(open_archive(other.root, secret=Passphrase(PASSPHRASE)),
                         read_data=True).ok


def test_an_unwritable_cache_directory_falls_back_to_memory(
        backups: Backups, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    populate(backups.store, per_folder=2)
    report = _backup(backups, blocker / "cache")
    assert report.messages > 0
    _assert_newest_is_the_store(backups)


@pytest.mark.parametrize("stale_rows", [True, False])
def test_the_cache_holds_only_the_newest_snapshots_listings(
        backups: Backups, tmp_path: Path, stale_rows: bool) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)
    _backup(backups, cache)
    if stale_rows:
        _touch_every_folder(backups, 900)
    _backup(backups, cache)
    reader = backups.reader()
    newest = reader.load_snapshot(reader.snapshots()[-1].id)
    wanted = {m.tree for e in newest.users.values() for m in e.mailboxes}
    opened = BackupCache.open(reader, _rows(cache, reader))
    assert set(opened.listing_ids()) == wanted
    opened.close()
