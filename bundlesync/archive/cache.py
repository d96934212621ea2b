"""The backup's local cache of an archive: which blobs its index files list, and the
newest snapshot's folder listings (archive-v1 §8.3; docs/backups.md, "The local cache").

A backup asks two questions per run: "does the archive already hold this body?"
(once per new message) and "what did this folder hold last time?" (once per changed
folder). Answering them from the archive means decrypting every index file and the
previous listings, and holding every body id in memory: time and memory that grow
with the archive. This cache answers them from one SQLite file instead.

It is an accelerator, never an authority:

* **Blobs** are mirrored from index files only, and the cache records which index
  files it holds. An index file's name is the SHA-256 of its signed bytes, so the
  same name means the same signed content. On open, the cache is compared with the
  archive's ``index/`` directory: new index files are read (signature checked) and
  added; if any index file the cache holds is gone (``prune`` replaced it), every
  blob row is dropped and rebuilt from the archive. A body is recorded only after
  the index file that lists it is written and synced, so a crash never leaves the
  cache claiming a body the archive does not list.
* **Listings** are stored under their tree id and checked against it (SHA-256) on
  every read; a row that does not match is dropped and the archive is read instead.
  After each backup only the new snapshot's listings are kept.
* A cache of another archive (its recorded archive id or site key differ), of another
  cache version, or that SQLite cannot read is deleted and rebuilt.

Without a cache directory the same tables live in memory for one run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import zstandard

from bundlesync.archive.objects import BLOB_BODY, BLOB_TREE, BlobRef, parse_entry
from bundlesync.archive.repository import MAX_TREE, Archive

CACHE_VERSION = "1"
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
LISTING_BATCH = 4 * 1024 * 1024  # compressed listings held before they are written
_TABLES = ("meta", "index_files", "bodies", "trees", "listings")


def cache_path(directory: Path, archive: Archive) -> Path:
    """Where the cache of ``archive`` lives in ``directory`` (one file per archive id)."""
    return directory / f"backup-{archive.config.archive_id.hex()}.sqlite"


class BackupCache:
    """The index mirror and listing cache of one archive (see the module docstring).

    Open it with :meth:`open`, which validates it against the archive. Used from one
    thread (the backup's main thread).
    """

    def __init__(self, archive: Archive, db: sqlite3.Connection, path: Path | None) -> None:
        self.archive = archive
        self.db = db
        self.path = path
        self.rebuilt = False  # for the report and the tests: the blob rows were re-read
        self.files_read = 0  # index files read from the archive on open
        self._zstd_c = zstandard.ZstdCompressor(level=1)
        self._zstd_d = zstandard.ZstdDecompressor()
        self._new_listings: dict[bytes, bytes] = {}
        self._new_bytes = 0
        self._synced = False

    # --- opening and validating ----------------------------------------------------------

    @classmethod
    def open(cls, archive: Archive, directory: Path | None) -> BackupCache:
        """The archive's cache in ``directory`` (None: in memory, for this run only),
        brought in line with the archive's index files."""
        path = cache_path(directory, archive) if directory is not None else None
        if path is not None:
            try:
                return cls._open_checked(archive, path)
            except sqlite3.DatabaseError:
                # Unreadable (corrupt, truncated, not a database): never trusted, rebuilt.
                _remove(path)
            except OSError:
                pass  # the directory cannot be made: the retry says the same
            try:
                return cls._open_checked(archive, path)
            except (sqlite3.DatabaseError, OSError):
                pass  # e.g. a read-only home: this run keeps its cache in memory
        return cls._open_checked(archive, None)

    @classmethod
    def _open_checked(cls, archive: Archive, path: Path | None) -> BackupCache:
        cache = cls._connect(archive, path)
        try:
            cache._check_meta()
            if path is not None:  # cheap with a cache on disk; in memory only when asked
                cache._sync_with_archive()
        except BaseException:
            cache.db.close()
            raise
        return cache

    @classmethod
    def _connect(cls, archive: Archive, path: Path | None) -> BackupCache:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)
        cache = cls(archive, db, path)
        try:
            if path is not None:
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)  # it names the archive's bodies and folders
                db.execute("PRAGMA journal_mode=WAL")
                # A lost last transaction only means index files read again next time.
                db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return cache

    def _expected_meta(self) -> dict[str, str]:
        config = self.archive.config
        return {"version": CACHE_VERSION, "archive": config.archive_id.hex(),
                "site": config.signing_public.hex()}

    def _check_meta(self) -> None:
        expected = self._expected_meta()
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if meta != expected:  # new, another archive's, or another version's: start over
            if meta:
                self.rebuilt = True
            self._wipe(tables=_TABLES)
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO meta VALUES (?, ?)", expected.items())
            self.db.execute("COMMIT")

    def _sync_with_archive(self) -> None:
        self._synced = True
        held = {row[0] for row in self.db.execute("SELECT name FROM index_files")}
        current = self.archive.index_names()
        if held - set(current):
            # An index file the rows came from is gone (prune superseded it): what it
            # listed may be gone too. Only a rebuild knows what is left.
            self._wipe(tables=("index_files", "bodies", "trees"))
            self.rebuilt = True
            held = set()
        for name in current:
            if name not in held:
                packs, _supersedes = self.archive.read_index_raw(name)
                self.record_index(name, packs)
                self.files_read += 1

    def _wipe(self, *, tables: Iterable[str]) -> None:
        self.db.execute("BEGIN")
        for table in tables:
            self.db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        self.db.execute("COMMIT")

    # --- blobs -----------------------------------------------------------------------------

    def record_index(self, name: str,
                     packs: Iterable[tuple[bytes, int, list[object]]]) -> None:
        """Add what the index file ``name`` lists; call only once that file is written
        and synced (or read from the archive)."""
        if not self._synced:
            self._sync_with_archive()  # the new file is then read from the archive
        what = f"Index file {name[:12]}"
        self.db.execute("BEGIN")
        try:
            for pack, _size, entries in packs:
                bodies: list[tuple[bytes]] = []
                trees: list[tuple[bytes, bytes, int, int, int, int]] = []
                for entry in entries:
                    ref = parse_entry(entry, pack, what=what)
                    if ref.kind == BLOB_BODY:
                        bodies.append((ref.id,))
                    else:
                        trees.append((ref.id, pack, ref.segment_offset, ref.segment_length,
                                      ref.offset, ref.length))
                self.db.executemany("INSERT OR IGNORE INTO bodies VALUES (?)", bodies)
                self.db.executemany("INSERT OR IGNORE INTO trees VALUES (?, ?, ?, ?, ?, ?)",
                                    trees)
            self.db.execute("INSERT OR IGNORE INTO index_files VALUES (?)", (name,))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def has_body(self, blob_id: bytes) -> bool:
        """Whether an index file of the archive lists this body."""
        if not self._synced:
            self._sync_with_archive()
        return self.db.execute("SELECT 1 FROM bodies WHERE id = ?",
                               (blob_id,)).fetchone() is not None

    def tree_ref(self, tree_id: bytes) -> BlobRef | None:
        """Where an index file of the archive says this tree is."""
        if not self._synced:
            self._sync_with_archive()
        row = self.db.execute("SELECT pack, segment_offset, segment_length, offset, length "
                              "FROM trees WHERE id = ?", (tree_id,)).fetchone()
        if row is None:
            return None
        return BlobRef(BLOB_TREE, tree_id, row[0], row[1], row[2], row[3], row[4])

    def has(self, kind: int, blob_id: bytes) -> bool:
        return self.has_body(blob_id) if kind == BLOB_BODY else self.tree_ref(blob_id) is not None

    # --- listings --------------------------------------------------------------------------

    def listing(self, tree_id: bytes) -> bytes | None:
        """A tree's CBOR bytes if the cache holds them and they hash to ``tree_id``."""
        packed = self._new_listings.get(tree_id)
        if packed is None:
            row = self.db.execute("SELECT data FROM listings WHERE id = ?",
                                  (tree_id,)).fetchone()
            if row is None:
                return None
            packed = row[0]
        try:
            data = self._zstd_d.decompress(packed, max_output_size=MAX_TREE)
        except zstandard.ZstdError:
            data = b""
        if hashlib.sha256(data).digest() != tree_id:
            self._new_listings.pop(tree_id, None)
            self.db.execute("DELETE FROM listings WHERE id = ?", (tree_id,))
            return None
        return data

    def keep_listing(self, tree_id: bytes, data: bytes) -> None:
        """Remember a tree's bytes (already known to hash to ``tree_id``); written in
        batches of a few MB, one transaction each. Not kept in memory (no cache
        directory): a run never reads its own listings back."""
        if self.path is None:
            return
        packed = self._zstd_c.compress(data)
        self._new_listings[tree_id] = packed
        self._new_bytes += len(packed)
        if self._new_bytes >= LISTING_BATCH:
            self._write_listings()

    def _write_listings(self) -> None:
        if not self._new_listings:
            return
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO listings VALUES (?, ?)",
                            self._new_listings.items())
        self.db.execute("COMMIT")
        self._new_listings, self._new_bytes = {}, 0

    def retain_listings(self, tree_ids: Iterable[bytes]) -> None:
        """Keep only these listings (the newest snapshot's)."""
        self._write_listings()
        self.db.execute("BEGIN")
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (id BLOB PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.keep")
        self.db.executemany("INSERT OR IGNORE INTO temp.keep VALUES (?)",
                            ((t,) for t in tree_ids))
        self.db.execute("DELETE FROM listings WHERE id NOT IN (SELECT id FROM temp.keep)")
        self.db.execute("COMMIT")

    def listing_ids(self) -> Iterator[bytes]:
        for (tree_id,) in self.db.execute("SELECT id FROM listings"):
            yield tree_id

    def close(self) -> None:
        """Write what is held and close (listings are only an accelerator: an error
        writing them is not the backup's)."""
        with contextlib.suppress(sqlite3.Error):
            self._write_listings()
        self.db.close()


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
