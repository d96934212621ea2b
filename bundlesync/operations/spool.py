"""The spool: bodies received in bundles and not yet delivered into the store.

Bodies are appended to one file per bundle, ``<home>/spool/<n>.bodies``; where
each body lies is recorded in the state index in the same transaction that folds
the bundle's changes, after the file was synced. So the index never names a body
that is not on disk, and a bundle's thousands of bodies cost one file, not
thousands (creating a file is the dearest thing a file system does here).

When nothing is pending any more, the spool is emptied.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from bundlesync.core.model import Body
from bundlesync.fsio import write_all
from bundlesync.state.index import StateIndex

# Where the bodies lie is recorded this many at a time (one statement each time).
SPOOL_ROWS = 500


class SpoolWriter:
    """Appends the bodies of one bundle; ``finish`` syncs them before the commit."""

    def __init__(self, spool: Path, index: StateIndex) -> None:
        self.spool = spool
        self.index = index
        self.path: Path | None = None
        self.handle: int | None = None
        self.offset = 0
        self.rows: list[tuple[str, str, int, int]] = []
        self.added: set[str] = set()

    def add(self, body: Body) -> None:
        if self.handle is None:
            self.spool.mkdir(mode=0o700, exist_ok=True)
            number = self.index.next_spool_file()
            self.path = self.spool / f"{number}.bodies"
            self.handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                  0o600)
        assert self.path is not None
        if body.sha256 in self.added:
            return
        # Written without asking the index first (one statement per body was most
        # of the cost here); a body spooled already by an earlier bundle keeps its
        # first place (INSERT OR IGNORE), and these bytes go with the spool.
        self.added.add(body.sha256)
        self.rows.append((body.sha256, self.path.name, self.offset, len(body.data)))
        write_all(self.handle, body.data)
        self.offset += len(body.data)
        if len(self.rows) >= SPOOL_ROWS:
            self._record()

    def _record(self) -> None:
        self.index.put_spooled_many(self.rows)
        self.rows = []

    def finish(self) -> None:
        if self.handle is not None:
            os.fsync(self.handle)
            os.close(self.handle)
            self.handle = None
        self._record()

    def abandon(self) -> None:
        self.rows = []
        if self.handle is not None:
            os.close(self.handle)
            self.handle = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def read_spooled(spool: Path, index: StateIndex, body: str) -> bytes | None:
    """The spooled bytes of ``body``, checked against its SHA-256; None if absent."""
    where = index.spooled(body)
    if where is None:
        return None
    name, offset, size = where
    try:
        fd = os.open(spool / name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    return data if hashlib.sha256(data).hexdigest() == body else None


class SpoolReader:
    """Reads spooled bodies at places looked up in bulk, keeping the spool files open.

    Close it when done (an apply reads thousands of bodies from a few files).
    """

    def __init__(self, spool: Path, index: StateIndex) -> None:
        self.spool = spool
        self.index = index
        self.places: dict[str, tuple[str, int, int]] = {}
        self.handles: dict[str, int] = {}

    def expect(self, bodies: Iterable[str]) -> None:
        """Look up where ``bodies`` lie, with one statement (replacing the last)."""
        self.places = self.index.spooled_many(bodies)

    def read(self, body: str) -> bytes | None:
        """The spooled bytes of ``body``, checked against its SHA-256; None if absent."""
        where = self.places.get(body)
        if where is None:
            return read_spooled(self.spool, self.index, body)
        name, offset, size = where
        fd = self.handles.get(name)
        if fd is None:
            try:
                fd = self.handles[name] = os.open(self.spool / name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        data = os.pread(fd, size, offset)
        return data if hashlib.sha256(data).hexdigest() == body else None

    def close(self) -> None:
        for fd in self.handles.values():
            os.close(fd)
        self.handles = {}


def clear_spool(spool: Path, index: StateIndex) -> None:
    """Forget and remove every spooled body (call when nothing is pending)."""
    with index.transaction():
        index.clear_spooled()
    if spool.is_dir():
        for item in spool.iterdir():
            if item.is_file():
                item.unlink(missing_ok=True)
