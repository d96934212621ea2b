"""The SQLite file behind a backup's local archive cache (bundlesync.archive.cache).

Storage only: rows in, rows out. What the rows mean, and when they may be trusted,
is decided by :mod:`bundlesync.archive.cache` (archive-v1 §8.3), which sees this
through its ``CacheRows`` protocol. A file SQLite cannot read is deleted and made
again; a directory that cannot hold it gives an in-memory database for the run.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS index_files (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS bodies (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (
    id BLOB PRIMARY KEY, pack BLOB NOT NULL, segment_offset INTEGER NOT NULL,
    segment_length INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listings (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
"""
_TABLES = ("meta", "index_files", "bodies", "trees", "listings")
_BLOB_TABLES = ("index_files", "bodies", "trees")
# id, pack, segment offset, segment length, offset, length
TreeRow = tuple[bytes, bytes, int, int, int, int]


class ArchiveCacheDb:
    """One archive's cache rows in SQLite (WAL; one thread)."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path | None) -> ArchiveCacheDb:
        """The database at ``path`` (made if missing; deleted and made again if SQLite
        cannot read it), or in memory if ``path`` is None or cannot be used."""
        if path is not None:
            for _attempt in range(2):
                try:
                    return cls._connect(path)
                except sqlite3.DatabaseError:
                    _remove(path)  # corrupt, truncated, not a database: never trusted
                except OSError:
                    break
        return cls._connect(None)

    @classmethod
    def _connect(cls, path: Path | None) -> ArchiveCacheDb:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(":memory:" if path is None else str(path),
                                     isolation_level=None)
        try:
            if path is not None:
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)  # it names the archive's bodies and folders
                connection.execute("PRAGMA journal_mode=WAL")
                # A lost last transaction only means index files read again next time.
                connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            connection.execute("SELECT count(*) FROM meta").fetchone()
        except BaseException:
            connection.close()
            raise
        return cls(connection, path)

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def reset(self, meta: dict[str, str]) -> None:
        """Forget everything and record ``meta``."""
        self._wipe(_TABLES)
        with self._transaction():
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())

    def forget_blobs(self) -> None:
        """Forget every blob row and which index files they came from."""
        self._wipe(_BLOB_TABLES)

    def index_files(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT name FROM index_files")}

    def add_index_file(self, name: str, bodies: Iterable[bytes],
                       trees: Iterable[TreeRow]) -> None:
        """One index file's blobs and its name, in one transaction."""
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO bodies VALUES (?)",
                                 ((b,) for b in bodies))
            self._db.executemany("INSERT OR IGNORE INTO trees VALUES (?, ?, ?, ?, ?, ?)",
                                 trees)
            self._db.execute("INSERT OR IGNORE INTO index_files VALUES (?)", (name,))

    def has_body(self, blob_id: bytes) -> bool:
        return self._db.execute("SELECT 1 FROM bodies WHERE id = ?",
                                (blob_id,)).fetchone() is not None

    def tree(self, tree_id: bytes) -> TreeRow | None:
        row = self._db.execute("SELECT id, pack, segment_offset, segment_length, offset, "
                               "length FROM trees WHERE id = ?", (tree_id,)).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], row[4], row[5])

    def listing(self, tree_id: bytes) -> bytes | None:
        row = self._db.execute("SELECT data FROM listings WHERE id = ?", (tree_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def drop_listing(self, tree_id: bytes) -> None:
        self._db.execute("DELETE FROM listings WHERE id = ?", (tree_id,))

    def put_listings(self, listings: Iterable[tuple[bytes, bytes]]) -> None:
        # Listings only spare reading the archive: a failure to keep them is not one.
        with contextlib.suppress(sqlite3.Error), self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO listings VALUES (?, ?)", listings)

    def retain_listings(self, tree_ids: Iterable[bytes]) -> None:
        with contextlib.suppress(sqlite3.Error), self._transaction():
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (id BLOB PRIMARY KEY)")
            self._db.execute("DELETE FROM temp.keep")
            self._db.executemany("INSERT OR IGNORE INTO temp.keep VALUES (?)",
                                 ((t,) for t in tree_ids))
            self._db.execute("DELETE FROM listings WHERE id NOT IN (SELECT id FROM temp.keep)")

    def listing_ids(self) -> Iterator[bytes]:
        for (tree_id,) in self._db.execute("SELECT id FROM listings"):
            yield tree_id

    def close(self) -> None:
        self._db.close()

    def _wipe(self, tables: Iterable[str]) -> None:
        with self._transaction():
            for table in tables:
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
