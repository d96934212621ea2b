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
import sys
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice

from bundlesync.errors import StoreError
from bundlesync.operations.site import Site
from bundlesync.operations.spool import SpoolReader, read_spooled
from bundlesync.state.index import FileRow
from bundlesync.stores.base import FolderPath

# How far read_many reads ahead: at most this many bodies, and no more bytes than
# this beyond the body being handed out (one larger body is always allowed).
READ_AHEAD_BODIES = 64
READ_AHEAD_BYTES = 16 << 20

# Bodies whose files read_many looks up with one statement.
PLACES_PER_LOOKUP = 256
# Bodies of one folder read_many reads as one task of the reader thread.
RUN_BODIES = 32

Candidate = tuple[str, FolderPath, str]  # (user, folder path, key) of a file holding a body
Place = tuple[str, str, str, int]  # (user, folder GUID, key, size) of a file holding a body


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

        The files are read and hashed in one worker thread, ahead of the caller: at
        most ``ahead_bodies`` bodies and, beyond one run, ``ahead_bytes`` bytes. Bodies
        that follow each other in one folder (an export's bodies mostly do) are read
        as a run, the folder checked once for all (:meth:`Store.read_messages`). The
        index (whose connection belongs to this thread) is asked here, a list of
        :data:`PLACES_PER_LOOKUP` bodies at a time, and nothing else may use the store
        until the iterator is finished or closed.
        """
        queued: deque[tuple[str, Future[list[bytes | None]], int, int]] = deque()
        waiting = 0
        longest = max(1, min(RUN_BODIES, ahead_bodies))
        with ThreadPoolExecutor(1, thread_name_prefix="body-reader") as reader:
            try:
                for run in _runs(self._located(bodies), longest=longest,
                                 most_bytes=ahead_bytes):
                    size = sum(item[2] for item in run)
                    while queued and (len(queued) + len(run) > ahead_bodies
                                      or waiting + size > ahead_bytes):
                        body_, future, at, size_ = queued.popleft()
                        waiting -= size_
                        yield body_, self._or_spool(body_, future.result()[at])
                    future = reader.submit(self._read_run, run)
                    for at, (body, _candidates, body_size) in enumerate(run):
                        queued.append((body, future, at, body_size))
                    waiting += size
                while queued:
                    body_, future, at, _size = queued.popleft()
                    yield body_, self._or_spool(body_, future.result()[at])
            finally:
                for _body, future, _at, _size in queued:
                    future.cancel()

    def _located(self, bodies: Iterable[str]) -> Iterator[_Located]:
        for body, places in self._placed(bodies):
            yield body, self._candidates_at(places), places[0][3] if places else 0

    def _read_run(self, run: Sequence[_Located]) -> list[bytes | None]:
        """The bytes of each body of ``run`` (in the reader thread: no index here). The
        first candidates of a run's bodies lie in one folder: they are read together;
        a body not found there (moved, changed, gone) is looked for in its others."""
        read: dict[str, bytes | None] = {}
        first = run[0][1]
        if first:
            user, path, _key = first[0]
            try:
                for stored, data in self.site.store.read_messages(
                        user, path, [candidates[0][2] for _body, candidates, _size in run],
                        max_size=sys.maxsize):
                    read[stored.key] = data
            except StoreError:
                read = {}  # each body's files are tried one by one below
        found: list[bytes | None] = []
        for body, candidates, _size in run:
            data = read.get(candidates[0][2]) if candidates else None
            if data is not None and hashlib.sha256(data).hexdigest() == body:
                found.append(data)
            else:
                tried = 1 if candidates and candidates[0][2] in read else 0
                found.append(self._read_files(body, candidates[tried:]))
        return found

    def _placed(self, bodies: Iterable[str]) -> Iterator[tuple[str, list[Place]]]:
        """Each of ``bodies`` with the files last seen holding it, looked up a list at
        a time (a statement per body was most of a first export's SQL)."""
        it = iter(bodies)
        while chunk := list(islice(it, PLACES_PER_LOOKUP)):
            places = self.site.index.places_of_bodies(chunk)
            for body in chunk:
                yield body, places.get(body, [])

    def _candidates_at(self, places: Iterable[Place]) -> list[Candidate]:
        found = []
        for user, folder, key, _size in places:
            if user not in self.folders:
                self.folders[user] = {
                    row.guid: row.path for row in self.site.index.folders(user)
                }
            path = self.folders[user].get(folder)
            if path is not None:
                found.append((user, path, key))
        return found

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


_Located = tuple[str, list[Candidate], int]  # a body, its candidate files and its size


def _runs(located: Iterable[_Located], *, longest: int,
          most_bytes: int) -> Iterator[list[_Located]]:
    """``located`` cut into runs of bodies whose first candidates lie in one folder, of
    at most ``longest`` bodies and (beyond the first body) ``most_bytes`` bytes."""
    run: list[_Located] = []
    where: tuple[str, FolderPath] | None = None
    size = 0
    for item in located:
        candidates = item[1]
        here = (candidates[0][0], candidates[0][1]) if candidates else None
        if run and (here is None or here != where or len(run) >= longest
                    or size + item[2] > most_bytes):
            yield run
            run, size = [], 0
        run.append(item)
        size += item[2]
        where = here
    if run:
        yield run
