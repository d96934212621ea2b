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
  Beside a listing the backup wrote itself are the spans of its entries, so that
  the next backup copies unchanged entries as bytes (:mod:`bundlesync.archive.listing`,
  which checks them). After each backup only the new snapshot's listings are kept.
* A cache of another archive (its recorded archive id or site key differ), of another
  cache version, or that SQLite cannot read is deleted and rebuilt.

The rows live where the caller says (:class:`CacheRows`): the command line keeps them
in an SQLite file in the site's home (``bundlesync.state.archive_cache``: SQL lives
in the state layer only); without one, :class:`MemoryRows` holds them for one run.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import zstandard

from bundlesync.archive.objects import BLOB_BODY, BLOB_TREE, BlobRef, parse_entry
from bundlesync.archive.repository import MAX_TREE, Archive

CACHE_VERSION = "1"
LISTING_BATCH = 4 * 1024 * 1024  # compressed listings held before they are written
# A listing row with the spans of its entries (bundlesync.archive.listing): this
# magic, the compressed listing's length, the compressed listing, the spans. A row
# without it is a compressed listing alone (zstd's own magic differs).
SPANS_MAGIC = b"BSL1"
_LENGTH = struct.Struct(">I")
# id, pack, segment offset, segment length, offset, length
TreeRow = tuple[bytes, bytes, int, int, int, int]


def cache_path(directory: Path, archive: Archive) -> Path:
    """Where the cache of ``archive`` lives in ``directory`` (one file per archive id)."""
    return directory / f"backup-{archive.config.archive_id.hex()}.sqlite"


class CacheRows(Protocol):
    """Where a cache's rows are kept (storage only; the meaning is BackupCache's)."""

    def meta(self) -> dict[str, str]: ...
    def reset(self, meta: dict[str, str]) -> None: ...
    def forget_blobs(self) -> None: ...
    def index_files(self) -> set[str]: ...
    def add_index_file(self, name: str, bodies: Iterable[bytes],
                       trees: Iterable[TreeRow]) -> None: ...
    def has_body(self, blob_id: bytes) -> bool: ...
    def tree(self, tree_id: bytes) -> TreeRow | None: ...
    def listing(self, tree_id: bytes) -> bytes | None: ...
    def drop_listing(self, tree_id: bytes) -> None: ...
    def put_listings(self, listings: Iterable[tuple[bytes, bytes]]) -> None: ...
    def retain_listings(self, tree_ids: Iterable[bytes]) -> None: ...
    def listing_ids(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class MemoryRows:
    """Rows for one run, in memory (no cache directory; the tests' default)."""

    def __init__(self) -> None:
        self._meta: dict[str, str] = {}
        self._files: set[str] = set()
        self._bodies: set[bytes] = set()
        self._trees: dict[bytes, TreeRow] = {}
        self._listings: dict[bytes, bytes] = {}

    def meta(self) -> dict[str, str]:
        return dict(self._meta)

    def reset(self, meta: dict[str, str]) -> None:
        self.__init__()  # type: ignore[misc]
        self._meta = dict(meta)

    def forget_blobs(self) -> None:
        self._files, self._bodies, self._trees = set(), set(), {}

    def index_files(self) -> set[str]:
        return set(self._files)

    def add_index_file(self, name: str, bodies: Iterable[bytes],
                       trees: Iterable[TreeRow]) -> None:
        self._bodies.update(bodies)
        for row in trees:
            self._trees.setdefault(row[0], row)
        self._files.add(name)

    def has_body(self, blob_id: bytes) -> bool:
        return blob_id in self._bodies

    def tree(self, tree_id: bytes) -> TreeRow | None:
        return self._trees.get(tree_id)

    def listing(self, tree_id: bytes) -> bytes | None:
        return self._listings.get(tree_id)

    def drop_listing(self, tree_id: bytes) -> None:
        self._listings.pop(tree_id, None)

    def put_listings(self, listings: Iterable[tuple[bytes, bytes]]) -> None:
        for tree_id, data in listings:
            self._listings.setdefault(tree_id, data)

    def retain_listings(self, tree_ids: Iterable[bytes]) -> None:
        keep = set(tree_ids)
        self._listings = {k: v for k, v in self._listings.items() if k in keep}

    def listing_ids(self) -> Iterator[bytes]:
        yield from list(self._listings)

    def close(self) -> None:
        return None


class BackupCache:
    """The index mirror and listing cache of one archive (see the module docstring).

    Open it with :meth:`open`, which validates it against the archive. Used from one
    thread (the backup's main thread).
    """

    def __init__(self, archive: Archive, rows: CacheRows, *, keep_listings: bool) -> None:
        self.archive = archive
        self.rows = rows
        self.keep_listings = keep_listings
        self.rebuilt = False  # for the tests: the rows were dropped and read again
        self.files_read = 0  # index files read from the archive
        # One of zstd's fast levels: listings are mostly hashes, level 1 made them only
        # 14 % smaller and took twice the time to compress and decompress.
        self._zstd_c = zstandard.ZstdCompressor(level=-3)
        self._zstd_d = zstandard.ZstdDecompressor()
        self._new_listings: dict[bytes, bytes] = {}
        self._new_bytes = 0
        self._synced = False

    @classmethod
    def open(cls, archive: Archive, rows: CacheRows | None) -> BackupCache:
        """The archive's cache over ``rows`` (None: in memory for this run), checked
        against the archive: another archive's or version's rows are dropped; with
        rows that persist, new index files are read now (cheap: a directory listing),
        in memory only when first asked."""
        persistent = rows is not None
        cache = cls(archive, rows if rows is not None else MemoryRows(),
                    keep_listings=persistent)
        cache._check_meta()
        if persistent:
            cache._sync_with_archive()
        return cache

    def _expected_meta(self) -> dict[str, str]:
        config = self.archive.config
        return {"version": CACHE_VERSION, "archive": config.archive_id.hex(),
                "site": config.signing_public.hex()}

    def _check_meta(self) -> None:
        expected = self._expected_meta()
        meta = self.rows.meta()
        if meta != expected:  # new, another archive's, or another version's: start over
            if meta:
                self.rebuilt = True
            self.rows.reset(expected)

    def _sync_with_archive(self) -> None:
        self._synced = True
        held = self.rows.index_files()
        current = self.archive.index_names()
        if held - set(current):
            # An index file the rows came from is gone (prune superseded it): what it
            # listed may be gone too. Only a rebuild knows what is left (§8.3).
            self.rows.forget_blobs()
            self.rebuilt = True
            held = set()
        for name in current:
            if name not in held:
                packs, _supersedes = self.archive.read_index_raw(name)
                self._add(name, packs)
                self.files_read += 1

    # --- blobs -----------------------------------------------------------------------------

    def record_index(self, name: str,
                     packs: Iterable[tuple[bytes, int, list[object]]]) -> None:
        """Add what the index file ``name`` lists; call only once that file is written
        and synced (archive-v1 §8.3)."""
        if not self._synced:
            self._sync_with_archive()  # the new file is then read from the archive
        self._add(name, packs)

    def _add(self, name: str, packs: Iterable[tuple[bytes, int, list[object]]]) -> None:
        what = f"Index file {name[:12]}"
        bodies: list[bytes] = []
        trees: list[TreeRow] = []
        for pack, _size, entries in packs:
            for entry in entries:
                ref = parse_entry(entry, pack, what=what)
                if ref.kind == BLOB_BODY:
                    bodies.append(ref.id)
                else:
                    trees.append((ref.id, pack, ref.segment_offset, ref.segment_length,
                                  ref.offset, ref.length))
        self.rows.add_index_file(name, bodies, trees)

    def has_body(self, blob_id: bytes) -> bool:
        """Whether an index file of the archive lists this body."""
        if not self._synced:
            self._sync_with_archive()
        return self.rows.has_body(blob_id)

    def tree_ref(self, tree_id: bytes) -> BlobRef | None:
        """Where an index file of the archive says this tree is."""
        if not self._synced:
            self._sync_with_archive()
        row = self.rows.tree(tree_id)
        if row is None:
            return None
        return BlobRef(BLOB_TREE, tree_id, row[1], row[2], row[3], row[4], row[5])

    def has(self, kind: int, blob_id: bytes) -> bool:
        return self.has_body(blob_id) if kind == BLOB_BODY else self.tree_ref(blob_id) is not None

    # --- listings --------------------------------------------------------------------------

    def listing(self, tree_id: bytes) -> tuple[bytes, bytes | None] | None:
        """A tree's CBOR bytes if the cache holds them and they hash to ``tree_id``,
        with the spans of its entries kept beside them (unchecked: see
        :func:`bundlesync.archive.listing.load_spans`), if any."""
        packed = self._new_listings.get(tree_id)
        if packed is None:
            packed = self.rows.listing(tree_id)
            if packed is None:
                return None
        spans: bytes | None = None
        if packed.startswith(SPANS_MAGIC) and len(packed) >= 8:
            (length,) = _LENGTH.unpack_from(packed, 4)
            packed, spans = packed[8:8 + length], packed[8 + length:]
        try:
            data = self._zstd_d.decompress(packed, max_output_size=MAX_TREE)
        except zstandard.ZstdError:
            data = b""
        if hashlib.sha256(data).digest() != tree_id:
            self._new_listings.pop(tree_id, None)
            self.rows.drop_listing(tree_id)
            return None
        return data, spans

    def keep_listing(self, tree_id: bytes, data: bytes, spans: bytes | None = None) -> None:
        """Remember a tree's bytes (already known to hash to ``tree_id``) and the
        spans of its entries (:func:`bundlesync.archive.listing.dump_spans`); written
        in batches of a few MB. Not kept without a
        persistent cache: a run never reads its own listings back."""
        if not self.keep_listings:
            return
        packed = self._zstd_c.compress(data)
        if spans is not None:
            packed = b"".join((SPANS_MAGIC, _LENGTH.pack(len(packed)), packed, spans))
        self._new_listings[tree_id] = packed
        self._new_bytes += len(packed)
        if self._new_bytes >= LISTING_BATCH:
            self._write_listings()

    def _write_listings(self) -> None:
        if self._new_listings:
            self.rows.put_listings(self._new_listings.items())
        self._new_listings, self._new_bytes = {}, 0

    def retain_listings(self, tree_ids: Iterable[bytes]) -> None:
        """Keep only these listings (the newest snapshot's)."""
        self._write_listings()
        self.rows.retain_listings(tree_ids)

    def listing_ids(self) -> Iterator[bytes]:
        return self.rows.listing_ids()

    def close(self) -> None:
        """Write what is held and close."""
        try:
            self._write_listings()
        finally:
            self.rows.close()
