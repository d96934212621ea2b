"""The message files of one Maildir folder: listed reliably, found by key.

Other programs (Dovecot, a delivery agent, a mail client) rename and add files
while we read. Two things must hold anyway:

* a listing never leaves out a message that was present throughout it (a
  message left out would look expunged, and the expunge would travel);
* an operation on a message finds its file by key even after someone renamed
  it, without listing a large folder for every operation.

A folder's *marks* are the mtimes (ns) of its ``cur/`` and ``new/``: any add,
rename or unlink in them moves a mark, except within one tick of the file
system's timestamps -- which is why a young mark is *racy*
(:func:`racy_window_ns` says how young).
"""

from __future__ import annotations

import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bundlesync.stores import stamps
from bundlesync.stores.dovecot_files import key_of
from bundlesync.stores.errors import FolderNotFound

# The stamp rules live in ``stores.stamps`` (shared with the quick start-up path);
# their names stay importable from here.
Marks = stamps.Marks
SECOND_NS = stamps.SECOND_NS
COARSE_RACY_NS = stamps.COARSE_RACY_NS
FINE_RACY_NS = stamps.FINE_RACY_NS
marks = stamps.marks
timestamp_step_ns = stamps.timestamp_step_ns
racy_window_ns = stamps.racy_window_ns
is_racy = stamps.is_racy
symlinked_part = stamps.symlinked_part

MAX_LISTINGS = 8
_V = TypeVar("_V")


class Lru(Generic[_V]):
    """A small least-recently-used map from paths to cached values."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, _V] = OrderedDict()

    def get(self, key: str) -> _V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: _V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def trim(self, weight: Callable[[_V], int], budget: int) -> None:
        """Drop the least recently used items while their weights exceed ``budget``
        (the newest item always stays)."""
        total = sum(weight(v) for v in self._items.values())
        while total > budget and len(self._items) > 1:
            _, oldest = self._items.popitem(last=False)
            total -= weight(oldest)

    def drop_below(self, prefix: str) -> None:
        """Forget every entry whose path starts with ``prefix``."""
        for key in [k for k in self._items if k.startswith(prefix)]:
            del self._items[key]


@dataclass(slots=True)
class Entry:
    """Where a message file is: ``subdir`` is "cur" or "new", ``name`` its file name."""

    subdir: str
    name: str


Listing = dict[str, tuple[Entry, os.stat_result]]


def scan_names(directory: str, *, skipped: list[str] | None = None) -> dict[str, Entry]:
    """Key -> file, from readdir alone (no stat).

    Symlinks and anything else that is not a plain file are left out (the file
    type comes with the directory entry on Linux file systems, so this costs no
    stat); their paths are added to ``skipped``.
    """
    entries: dict[str, Entry] = {}
    # new/ before cur/: a file Dovecot moves from new/ to cur/ during the scan is
    # then seen at least once, never missed; cur/ wins when seen twice.
    for sub in ("new", "cur"):
        try:
            iterator = os.scandir(os.path.join(directory, sub))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with iterator:
            for entry in iterator:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    regular = entry.is_file(follow_symlinks=False)
                except OSError:
                    continue  # vanished meanwhile
                if not regular:
                    if skipped is not None:
                        skipped.append(entry.path)
                    continue
                # key_of, inlined: one call less per file of every folder listed.
                entries[name.partition(":")[0]] = Entry(sub, name)
    return entries


def _scan_with_stats(directory: str) -> tuple[Listing, bool]:
    """Key -> (file, stat) of regular files; True when a file vanished before its stat."""
    result: Listing = {}
    vanished = False
    for sub in ("new", "cur"):
        try:
            iterator = os.scandir(os.path.join(directory, sub))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with iterator:
            for entry in iterator:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    vanished = True
                    continue
                if stat.S_ISREG(st.st_mode):
                    result[key_of(name)] = (Entry(sub, name), st)
    return result, vanished


_Found = TypeVar("_Found")


def stable_names(directory: str, *, is_racy: Callable[[Marks], bool],
                 skipped: list[str] | None = None) -> tuple[dict[str, Entry], Marks]:
    """Like :func:`stable_listing`, from the names alone (no stat per file).

    Paths of symlinks and other files that are not plain files go to ``skipped``.
    """
    found: set[str] = set()

    def scan(path: str) -> tuple[dict[str, Entry], bool]:
        odd: list[str] = []
        listing = scan_names(path, skipped=odd)
        found.update(odd)
        return listing, False

    result = _stable(directory, is_racy=is_racy, scan=scan)
    if skipped is not None:
        skipped.extend(sorted(found))
    return result


def stable_listing(directory: str, *, is_racy: Callable[[Marks], bool]) -> tuple[Listing, Marks]:
    """List new/ and cur/ so that a message present throughout is never left out.

    A rename by another program during readdir can hide a file from that
    readdir. So one listing is trusted only if the marks did not move during it
    and are not racy; a racy one only once a second listing finds the same keys.
    While the folder keeps changing, every key seen in any attempt is kept (its
    latest file): a message reported that was just expunged is harmless, a
    message left out would look expunged. Returns the listing and marks from
    before it.
    """
    return _stable(directory, is_racy=is_racy, scan=_scan_with_stats)


def _stable(directory: str, *, is_racy: Callable[[Marks], bool],
            scan: Callable[[str], tuple[dict[str, _Found], bool]]
            ) -> tuple[dict[str, _Found], Marks]:
    seen: dict[str, _Found] = {}
    previous_keys: set[str] | None = None
    first_marks: Marks | None = None
    for attempt in range(MAX_LISTINGS):
        if attempt and previous_keys is None:
            time.sleep(0.001 * 2**attempt)  # let a burst of changes finish
        before = marks(directory)
        if before is None:
            raise FolderNotFound(f"folder {directory} disappeared while being listed")
        if first_marks is None:
            first_marks = before
        listing, vanished = scan(directory)
        seen.update(listing)
        if marks(directory) != before or vanished:
            previous_keys = None
            continue
        if not is_racy(before) or previous_keys == listing.keys():
            return listing, before
        previous_keys = set(listing)
    assert first_marks is not None
    # Marks from before the first attempt: the folder is listed afresh next time.
    return seen, first_marks


@dataclass(slots=True)
class _FolderIndex:
    entries: dict[str, Entry]
    marks: Marks


class FileIndex:
    """Key -> file for the few folders being worked on, kept current cheaply.

    A folder is scanned again only when its marks moved since we last looked
    (two stats per operation otherwise). Our own changes are recorded in place.
    A rename by someone else within the same clock tick goes unseen here; the
    caller then meets FileNotFoundError and asks again with ``refresh=True``.
    """

    def __init__(self, *, folders: int, entries: int = 0) -> None:
        self._indexes: Lru[_FolderIndex] = Lru(folders)
        # Besides the number of folders, the files they hold bound the memory: the
        # least recently used folders go while more than ``entries`` files are kept
        # (the folder in use always stays). 0: no such bound.
        self._entries = entries

    def _keep(self, directory: str, index: _FolderIndex) -> None:
        self._indexes.put(directory, index)
        if self._entries:
            self._indexes.trim(lambda kept: len(kept.entries), self._entries)

    def remember(self, directory: str, listing: Listing, folder_marks: Marks) -> None:
        """Keep a fresh listing (from :func:`stable_listing`)."""
        self.remember_entries(directory, {key: entry for key, (entry, _) in listing.items()},
                              folder_marks)

    def remember_entries(self, directory: str, entries: dict[str, Entry],
                         folder_marks: Marks) -> None:
        """Keep a fresh listing of names (from :func:`stable_names`)."""
        self._keep(directory, _FolderIndex(dict(entries), folder_marks))

    def locate(self, directory: str, key: str, *, refresh: bool) -> Entry | None:
        """The file holding ``key``, or None; FolderNotFound if the folder is gone."""
        index = self._indexes.get(directory)
        current = marks(directory)
        if current is None:
            raise FolderNotFound(f"folder {directory} does not exist")
        if refresh or index is None or index.marks != current:
            # Marks taken before the scan: a change during it shows up next time.
            index = _FolderIndex(scan_names(directory), current)
            self._keep(directory, index)
        return index.entries.get(key)

    def changed(self, directory: str, key: str, entry: Entry | None) -> None:
        """Record our own change (``entry`` None: removed) and the folder's new marks."""
        index = self._indexes.get(directory)
        if index is None:
            return
        if entry is None:
            index.entries.pop(key, None)
        else:
            index.entries[key] = entry
        current = marks(directory)
        if current is None:
            self._indexes.pop(directory)
        else:
            index.marks = current

    def locate_known(self, directory: str, key: str) -> Entry | None:
        """:meth:`locate` on the listing held, without checking the folder's marks
        (the caller checked them since, and a file that appeared meanwhile is
        caught when a new one is given its name: link() never replaces)."""
        index = self._indexes.get(directory)
        if index is None:
            return self.locate(directory, key, refresh=False)
        return index.entries.get(key)

    def note(self, directory: str, key: str, entry: Entry) -> None:
        """:meth:`changed` without taking the marks: :meth:`settle` takes them once
        after many changes."""
        index = self._indexes.get(directory)
        if index is not None:
            index.entries[key] = entry

    def settle(self, directory: str) -> None:
        """Take the folder's marks after the changes :meth:`note` recorded."""
        index = self._indexes.get(directory)
        if index is None:
            return
        current = marks(directory)
        if current is None:
            self._indexes.pop(directory)
        else:
            index.marks = current

    def forget_below(self, prefix: str) -> None:
        """Drop the folders under ``prefix`` (after renames and deletes)."""
        self._indexes.drop_below(prefix)
