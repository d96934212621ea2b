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

from bundlesync.stores.dovecot_files import key_of
from bundlesync.stores.errors import FolderNotFound

Marks = tuple[int, int]

SECOND_NS = 1_000_000_000
# Coarse file systems keep mtimes in 1 s steps (2 s on FAT): a mark younger than this
# may not move for a change made after it was read.
COARSE_RACY_NS = 2 * SECOND_NS
# On a file system that keeps sub-second mtimes the kernel stamps a change with its
# coarse clock, which lags the real time by at most one timer tick (1-10 ms); five
# ticks of the slowest timer, or twice the file system's own step if it is coarser.
FINE_RACY_NS = 50_000_000
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


def marks(directory: str) -> Marks | None:
    """mtimes (ns) of cur/ and new/ (0 for a missing one); None if the folder is gone.

    Neither the folder nor cur/ or new/ is followed when it is a symlink: such a
    folder is not a folder of this store (:func:`symlinked_part`).
    """
    found = []
    for sub in ("cur", "new"):
        try:
            st = os.lstat(os.path.join(directory, sub))
        except (FileNotFoundError, NotADirectoryError):
            found.append(0)
            continue
        found.append(st.st_mtime_ns if stat.S_ISDIR(st.st_mode) else 0)
    if found == [0, 0] and not _is_real_dir(directory):
        return None
    return (found[0], found[1])


def timestamp_step_ns(marks: tuple[int, ...]) -> int | None:
    """The finest step the file system's mtimes can have, judged from ``marks``.

    A file system that keeps whole seconds (ext3, HFS+, FAT's 2 s, some network
    file systems) truncates every mtime it stores, so its marks have no
    sub-second part. A mark with one proves finer timestamps, and the largest
    power of ten dividing every sub-second part bounds the step from above
    (exFAT's 10 ms shows as a multiple of 10 ms; nanosecond mtimes almost never
    divide by more than a few powers of ten, and a larger guess only widens the
    window). None when no mark has a sub-second part: coarse, or not known yet.
    Judging each folder by its own marks needs no probe and no state, and a store
    spread over several file systems is judged per file system.
    """
    fractions = [mark % SECOND_NS for mark in marks if mark]
    if not fractions or not any(fractions):
        return None
    step = SECOND_NS
    while step > 1 and any(f % step for f in fractions):
        step //= 10
    return step


def racy_window_ns(marks: tuple[int, ...]) -> int:
    """How long after its last change a folder's stamp stays racy.

    A stamp read when its newest mark is at least this old moves with any later
    change: the file system's clock has passed the mark by more than one step
    (docs/architecture.md, "Folder stamps"). 2 s unless ``marks`` prove finer
    timestamps (:func:`timestamp_step_ns`).
    """
    step = timestamp_step_ns(marks)
    if step is None:
        return COARSE_RACY_NS
    return max(FINE_RACY_NS, 2 * step)


def is_racy(marks: tuple[int, ...], now_ns: int) -> bool:
    """Whether a stamp read at ``now_ns`` could miss a change made after it was read."""
    window = racy_window_ns(marks)
    return any(now_ns - mark < window for mark in marks)


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def symlinked_part(directory: str, *, itself: bool = True) -> str | None:
    """The first of the folder directory, its cur/, new/ and tmp/ that is a symlink.

    ``itself`` False leaves out the directory itself (INBOX: the user's Maildir,
    which an administrator may well have placed through a link).

    Everything below a user's Maildir is read and written without following a
    symlink: a link could lead to any file of the system (we run as root), and an
    expunge through it would delete that file.
    """
    subs = [os.path.join(directory, sub) for sub in ("cur", "new", "tmp")]
    for path in ([directory, *subs] if itself else subs):
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return path
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


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
