"""Finding a message body at this site: in a file of the store, or in the spool.

A body travels only to a site that lacks it, so an import often takes a body from
a file already here: the old place of a moved message, or the same mailing-list
post in another user's folder. Every candidate is read and checked against the
SHA-256 before it is used; a file that vanished or changed is passed over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from bundlesync.errors import StoreError
from bundlesync.operations.site import Site
from bundlesync.operations.spool import read_spooled
from bundlesync.state.index import FileRow
from bundlesync.stores.base import FolderPath


class BodyFinder:
    """Reads bodies by SHA-256, caching each user's folder map from the index."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.folders: dict[str, dict[str, FolderPath]] = {}

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

        The spool before other files: it is read at an offset, where another file
        costs an index lookup, an open and a listing of its folder.
        """
        found = self._from_files(body, first)
        if found is None:
            found = read_spooled(self.site.spool, self.site.index, body)
        if found is None:
            found = self._from_files(body, self.site.index.files_with_body(body))
        return found

    def _from_files(self, body: str, rows: Iterable[FileRow]) -> bytes | None:
        for row in rows:
            path = self.path_of(row)
            if path is None:
                continue
            try:
                data = self.site.store.read_body(row.user, path, row.key)
            except StoreError:
                continue
            if hashlib.sha256(data).hexdigest() == body:
                return data
        return None
