"""Finding a message body at this site: in a file of the store, or in the spool.

A body travels only to a site that lacks it, so an import often takes a body from
a file already here: the old place of a moved message, or the same mailing-list
post in another user's folder. Every candidate is read and checked against the
SHA-256 before it is used; a file that vanished or changed is passed over.

An export reads many bodies in a row: :meth:`BodyFinder.read_many` reads and
hashes them in a thread ahead of the caller (file reads and SHA-256 release the
GIL), a bounded number of bytes ahead, while the caller encodes and compresses.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from bundlesync.errors import StoreError
from bundlesync.operations.site import Site
from bundlesync.operations.spool import SpoolReader, read_spooled
from bundlesync.state.index import FileRow
from bundlesync.stores.base import FolderPath

# How far read_many reads ahead: at most this many bodies, and no more bytes than
# this beyond the body being handed out (one larger body is always allowed).
READ_AHEAD_BODIES = 64
READ_AHEAD_BYTES = 16 << 20

Candidate = tuple[str, FolderPath, str]  # (user, folder path, key) of a file holding a body


class BodyFinder:
    """Reads bodies by SHA-256, caching each user's folder map from the index."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.folders: dict[str, dict[str, FolderPath]] = {}
        self.spool: SpoolReader | None = None

    def expect(self, bodies: Iterable[str]) -> None:
        """``bodies`` are read next: look up their places in the spool at once, and
        keep the spool's files open until :meth:`close`."""
        if self.spool is None:
            self.spool = SpoolReader(self.site.spool, self.site.index)
        self.spool.expect(bodies)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()

    def use_folders(self, user: str, folders: dict[str, FolderPath]) -> None:
        """Use a live folder map for ``user`` (one the caller keeps up to date)."""
        self.folders[user] = folders

    def path_of(self, row: FileRow) -> FolderPath | None:
        if row.user not in self.folders:
            self.folders[row.user] = {
                folder.guid: folder.path for folder in self.site.index.folders(row.user)
            }
        return self.folders[row.user].get(row.folder)

    def read(self, body: str, *, first: Iterable[FileRow] = ()) -> bytes | None:
        """The bytes of ``body`` from a file in ``first``, else from the spool, else from
        any other file holding it; None if it is nowhere here.

        The spool before other files: its place is known (looked up in bulk by
        :meth:`expect`), where another file costs an index lookup, an open and a
        listing of its folder.
        """
        found = self._find(body, first, give=False)
        return None if found is None else found[0]

    def take(self, body: str, *, first: Iterable[FileRow] = ()
             ) -> tuple[bytes, str | None] | None:
        """:meth:`read`, and a spool file holding exactly these bytes that the caller
        may make a message's file (each spool file is given once, and only by the
        reader :meth:`expect` made; None when the bytes came from elsewhere). The
        bytes are read and checked either way."""
        return self._find(body, first, give=True)

    def _find(self, body: str, first: Iterable[FileRow], *, give: bool
              ) -> tuple[bytes, str | None] | None:
        found = self._read_files(body, self._candidates(first))
        if found is not None:
            return found, None
        if self.spool is not None and give:
            spooled = self.spool.take(body)
            if spooled is not None:
                return spooled
        else:
            data = self._read_spool(body)
            if data is not None:
                return data, None
        found = self._read_files(body, self._candidates(self.site.index.files_with_body(body)))
        return None if found is None else (found, None)

    def read_many(self, bodies: Iterable[str], *, ahead_bodies: int = READ_AHEAD_BODIES,
                  ahead_bytes: int = READ_AHEAD_BYTES
                  ) -> Generator[tuple[str, bytes | None], None, None]:
        """Each of ``bodies`` with its bytes (None if it is nowhere here), in order.

        The files are read and hashed in one worker thread, ahead of the caller; the
        index (whose connection belongs to this thread) is asked here, and nothing
        else may use the store until the iterator is finished or closed.
        """
        queued: deque[tuple[str, Future[bytes | None], int]] = deque()
        waiting = 0
        with ThreadPoolExecutor(1, thread_name_prefix="body-reader") as reader:
            try:
                for body in bodies:
                    rows = self.site.index.files_with_body(body)
                    size = rows[0].size if rows else 0
                    queued.append((body, reader.submit(self._read_files, body,
                                                       self._candidates(rows)), size))
                    waiting += size
                    while len(queued) > ahead_bodies or (len(queued) > 1
                                                         and waiting > ahead_bytes):
                        body_, future, size_ = queued.popleft()
                        waiting -= size_
                        yield body_, self._or_spool(body_, future.result())
                while queued:
                    body_, future, _size = queued.popleft()
                    yield body_, self._or_spool(body_, future.result())
            finally:
                for _body, future, _size in queued:
                    future.cancel()

    def _candidates(self, rows: Iterable[FileRow]) -> list[Candidate]:
        found = []
        for row in rows:
            path = self.path_of(row)
            if path is not None:
                found.append((row.user, path, row.key))
        return found

    def _read_files(self, body: str, candidates: Sequence[Candidate]) -> bytes | None:
        """The first candidate file that still holds ``body`` (no index here: this runs
        in the reader thread too)."""
        for user, path, key in candidates:
            try:
                data = self.site.store.read_body(user, path, key)
            except StoreError:
                continue
            if hashlib.sha256(data).hexdigest() == body:
                return data
        return None

    def _or_spool(self, body: str, data: bytes | None) -> bytes | None:
        return data if data is not None else self._read_spool(body)

    def _read_spool(self, body: str) -> bytes | None:
        if self.spool is not None:
            return self.spool.read(body)
        return read_spooled(self.site.spool, self.site.index, body)
