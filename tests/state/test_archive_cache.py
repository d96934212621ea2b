"""The backup cache's storage (bundlesync.state.archive_cache): listings as files
beside the database, rows of an older layout dropped, nothing left after a reset."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bundlesync.state.archive_cache import ArchiveCacheDb, listings_dir


def test_listings_are_files_beside_the_database_and_only_the_kept_ones_stay(
        tmp_path: Path) -> None:
    path = tmp_path / "cache" / "backup-1.sqlite"
    db = ArchiveCacheDb.open(path)
    db.put_listings([(b"\x01" * 32, b"one"), (b"\x02" * 32, b"two")])
    db.put_listings([(b"\x01" * 32, b"one again")])  # the same id: the same listing
    assert db.listing(b"\x01" * 32) == b"one"
    assert sorted(db.listing_ids()) == [b"\x01" * 32, b"\x02" * 32]
    assert {p.stat().st_mode & 0o777 for p in listings_dir(path).iterdir()} == {0o600}
    db.retain_listings([b"\x02" * 32])
    assert list(db.listing_ids()) == [b"\x02" * 32] and db.listing(b"\x01" * 32) is None
    db.drop_listing(b"\x02" * 32)
    assert list(db.listing_ids()) == []
    db.put_listings([(b"\x03" * 32, b"three")])
    db.reset({"version": "1"})
    assert list(db.listing_ids()) == []
    db.close()


def test_listing_rows_of_an_older_layout_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "backup-1.sqlite"
    ArchiveCacheDb.open(path).close()
    with sqlite3.connect(path) as old:
        old.execute("INSERT INTO listings VALUES (?, ?)", (b"\x01" * 32, b"x" * 1000))
    db = ArchiveCacheDb.open(path)
    assert db.listing(b"\x01" * 32) is None
    db.close()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM listings").fetchone() == (0,)


def test_in_memory_listings_need_no_directory() -> None:
    db = ArchiveCacheDb.open(None)
    db.put_listings([(b"\x01" * 32, b"one")])
    assert db.listing(b"\x01" * 32) == b"one" and list(db.listing_ids()) == [b"\x01" * 32]
    db.retain_listings([])
    assert list(db.listing_ids()) == []
    db.close()
