"""The SQLite file behind a backup's local archive cache (bundlesync.archive.cache).

Storage only: rows in, rows out. What the rows mean, and when they may be trusted,
is decided by :mod:`bundlesync.archive.cache` (archive-v1 §8.3), which sees this
through its ``CacheRows`` protocol. A file SQLite cannot read is deleted and made
again; a directory that cannot hold it gives an in-memory database for the run.

Listings (tens of kB each, a few MB per backup) are files in a directory beside the
database, one per tree id, not rows: SQLite would write each twice (its log, then
the database) with a checksum per page, which cost a 1 % change backup more CPU than
comparing the listings did. A listing file is written once under its tree id and
never synced: one cut short by a crash does not hash to its name, and the cache
deletes it when it reads it (archive-v1 §8.3).
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
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def listings_dir(path: Path) -> Path:
    """Where the listings of the cache database at ``path`` are kept."""
    return path.with_name(f"{path.stem}-listings")


class ArchiveCacheDb:
    """One archive's cache rows in SQLite (WAL; one thread), listings in files beside it
    (in the database too when it is in memory)."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None) -> None:
        self._db = connection
        self.path = path
        self.listings_dir = listings_dir(path) if path is not None else None

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
            if (path is not None
                    and connection.execute("SELECT 1 FROM listings LIMIT 1").fetchone()):
                # Listings are files now; rows an older version kept are dead weight.
                connection.execute("DELETE FROM listings")
        except BaseException:
            connection.close()
            raise
        return cls(connection, path)

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def reset(self, meta: dict[str, str]) -> None:
        """Forget everything and record ``meta``."""
        self._wipe(_TABLES)
        if self.listings_dir is not None:
            self.retain_listings(())
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
        if self.listings_dir is None:
            row = self._db.execute("SELECT data FROM listings WHERE id = ?",
                                   (tree_id,)).fetchone()
            return None if row is None else bytes(row[0])
        try:
            fd = os.open(self.listings_dir / tree_id.hex(), os.O_RDONLY | _NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            try:
                return handle.read()
            except OSError:
                return None

    def drop_listing(self, tree_id: bytes) -> None:
        if self.listings_dir is None:
            self._db.execute("DELETE FROM listings WHERE id = ?", (tree_id,))
            return
        with contextlib.suppress(OSError):
            (self.listings_dir / tree_id.hex()).unlink()

    def put_listings(self, listings: Iterable[tuple[bytes, bytes]]) -> None:
        # Listings only spare reading the archive: a failure to keep them is not one.
        if self.listings_dir is None:
            with contextlib.suppress(sqlite3.Error), self._transaction():
                self._db.executemany("INSERT OR IGNORE INTO listings VALUES (?, ?)", listings)
            return
        with contextlib.suppress(OSError):
            self.listings_dir.mkdir(mode=0o700, exist_ok=True)
            for tree_id, data in listings:
                try:
                    fd = os.open(self.listings_dir / tree_id.hex(),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
                except FileExistsError:
                    continue  # the name is the content's hash: the same listing
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)

    def retain_listings(self, tree_ids: Iterable[bytes]) -> None:
        if self.listings_dir is None:
            with contextlib.suppress(sqlite3.Error), self._transaction():
                self._db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (id BLOB PRIMARY KEY)")
                self._db.execute("DELETE FROM temp.keep")
                self._db.executemany("INSERT OR IGNORE INTO temp.keep VALUES (?)",
                                     ((t,) for t in tree_ids))
                self._db.execute(
                    "DELETE FROM listings WHERE id NOT IN (SELECT id FROM temp.keep)")
            return
        keep = {t.hex() for t in tree_ids}
        with contextlib.suppress(OSError), os.scandir(self.listings_dir) as entries:
            for entry in entries:
                if entry.name not in keep:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def listing_ids(self) -> Iterator[bytes]:
        if self.listings_dir is None:
            for (tree_id,) in self._db.execute("SELECT id FROM listings"):
                yield tree_id
            return
        try:
            names = os.listdir(self.listings_dir)
        except OSError:
            return
        for name in names:
            with contextlib.suppress(ValueError):
                yield bytes.fromhex(name)

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
    with contextlib.suppress(OSError), os.scandir(listings_dir(path)) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
