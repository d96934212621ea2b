"""The spool: bodies received in bundles and not yet delivered into the store.

Each body of a bundle is a file of its own, ``<home>/spool/<n>/<sha256>`` (``n``
counts the bundles ingested); where each body lies is recorded in the state
index in the same transaction that folds the bundle's changes, after the whole
spool was synced (one ``syncfs``). So the index never names a body that is not
on disk.

A body in a file of its own can become a message without being written again:
the apply hands the file to the store, which hard-links it into the folder
(``Store.add_message(source=...)``) when the spool and the folder share a file
system. Each spool file is handed out once (:meth:`SpoolReader.take`), so two
messages never share an inode; the store checks the link count as well, which
also catches a link left by a run that was killed.

Spools written before this layout (one file per bundle, ``<n>.bodies``, bodies
at offsets) are still read and cleared. When nothing is pending any more, the
spool is emptied.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from bundlesync.core.model import Body
from bundlesync.fsio import sync_file_systems, write_all
from bundlesync.state.index import StateIndex

# Where the bodies lie is recorded this many at a time (one statement each time).
SPOOL_ROWS = 500

# A spool file is created, never opened again for writing: a name left behind by
# an interrupted run may already be a message's file (a hard link), which must
# not be truncated. O_NOFOLLOW with O_EXCL refuses a symlink planted there too.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_tree(directory: Path) -> None:
    """Remove a spool directory and the names in it; best effort (what stays is
    removed by the next clear). A name that is also a message's file stays a
    message: only the spool's name goes."""
    shutil.rmtree(directory, ignore_errors=True)


class SpoolWriter:
    """Writes the bodies of one bundle, a file each; ``finish`` syncs them before
    the commit."""

    def __init__(self, spool: Path, index: StateIndex) -> None:
        self.spool = spool
        self.index = index
        self.directory: Path | None = None
        self.prefix = ""  # the directory's path and a separator, for the files in it
        self.rows: list[tuple[str, str, int, int]] = []
        self.added: set[str] = set()

    def add(self, body: Body) -> None:
        if self.directory is None:
            self.spool.mkdir(mode=0o700, exist_ok=True)
            number = self.index.next_spool_file()
            directory = self.spool / str(number)
            # Left by an ingest that was killed before its commit (its number was
            # not committed either): nothing names those files; start afresh.
            if directory.is_dir() and not directory.is_symlink():
                _remove_tree(directory)
            directory.mkdir(mode=0o700)
            self.directory = directory
            self.prefix = os.path.join(directory, "")
        if body.sha256 in self.added:
            return
        # Written without asking the index first (one statement per body was most
        # of the cost here); a body spooled already by an earlier bundle keeps its
        # first place (INSERT OR IGNORE), and this file goes with the spool.
        self.added.add(body.sha256)
        # Strings, not Paths: thousands of bodies, and a Path costs more than its open.
        fd = os.open(self.prefix + body.sha256, _CREATE, 0o600)
        try:
            write_all(fd, body.data)
        finally:
            os.close(fd)
        self.rows.append((body.sha256, f"{self.directory.name}/{body.sha256}", 0,
                          len(body.data)))
        if len(self.rows) >= SPOOL_ROWS:
            self._record()

    def _record(self) -> None:
        self.index.put_spooled_many(self.rows)
        self.rows = []

    def finish(self) -> None:
        """Make every body written durable (one sync of the file system, not one
        per file), then record where the last of them lie."""
        if self.directory is not None and self.added:
            sync_file_systems([self.directory])
        self._record()

    def abandon(self) -> None:
        self.rows = []
        if self.directory is not None:
            _remove_tree(self.directory)
            self.directory = None


def _read_place(path: str, offset: int, size: int, body: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        data = os.pread(fd, size, offset)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if _intact(data, body) else None


def _intact(data: bytes, body: str) -> bool:
    # Checked on every read: a spool file handed to the store is a message's file
    # from then on, which its owner (or Dovecot) may change; and the disk may fail.
    return hashlib.sha256(data).hexdigest() == body


def _own_file(name: str) -> bool:
    """Whether a spool place is a body's own file (not a place in an old
    ``<n>.bodies`` file shared by a bundle's bodies)."""
    return "/" in name


def read_spooled(spool: Path, index: StateIndex, body: str) -> bytes | None:
    """The spooled bytes of ``body``, checked against its SHA-256; None if absent."""
    where = index.spooled(body)
    if where is None:
        return None
    name, offset, size = where
    return _read_place(os.path.join(spool, name), offset, size, body)


class SpoolReader:
    """Reads spooled bodies at places looked up in bulk.

    The files of an old-layout spool (one per bundle) stay open until
    :meth:`close`; a body's own file is opened for its read only.
    """

    def __init__(self, spool: Path, index: StateIndex) -> None:
        self.spool = spool
        self.prefix = os.path.join(spool, "")
        self.index = index
        self.places: dict[str, tuple[str, int, int]] = {}
        self.handles: dict[str, int] = {}
        # Spool files handed out to become a message's file (at most once each).
        self.given: set[str] = set()

    def expect(self, bodies: Iterable[str]) -> None:
        """Look up where ``bodies`` lie, with one statement (replacing the last)."""
        self.places = self.index.spooled_many(bodies)

    def read(self, body: str) -> bytes | None:
        """The spooled bytes of ``body``, checked against its SHA-256; None if absent."""
        found = self._read(body)
        return None if found is None else found[0]

    def take(self, body: str) -> tuple[bytes, str | None] | None:
        """The spooled bytes of ``body`` and, the first time it is asked for, the
        spool file holding exactly them, for the store to make a message's file;
        None if the body is not spooled (or its bytes are not intact)."""
        found = self._read(body)
        if found is None:
            return None
        data, name = found
        if not _own_file(name) or name in self.given:
            return data, None
        self.given.add(name)
        return data, self.prefix + name

    def _read(self, body: str) -> tuple[bytes, str] | None:
        where = self.places.get(body)
        if where is None:
            where = self.index.spooled(body)
            if where is None:
                return None
        name, offset, size = where
        if _own_file(name):
            data = _read_place(self.prefix + name, offset, size, body)
            return None if data is None else (data, name)
        fd = self.handles.get(name)
        if fd is None:
            try:
                fd = self.handles[name] = os.open(self.spool / name,
                                                  os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        data = os.pread(fd, size, offset)
        return (data, name) if _intact(data, body) else None

    def close(self) -> None:
        for fd in self.handles.values():
            os.close(fd)
        self.handles = {}


def clear_spool(spool: Path, index: StateIndex) -> None:
    """Forget and remove every spooled body (call when nothing is pending).

    Both layouts go: a body's own file (``<n>/<sha256>``; a message that was made
    of it keeps its bytes, only the spool's name goes) and an old bundle file
    (``<n>.bodies``).
    """
    with index.transaction():
        index.clear_spooled()
    if not spool.is_dir():
        return
    for item in spool.iterdir():
        if item.is_dir() and not item.is_symlink():
            _remove_tree(item)
        else:
            with contextlib.suppress(OSError):
                item.unlink()
