"""A folder's stamp: the mtimes of its ``cur/`` and ``new/``, and when it is racy.

The rules every reader of stamps shares -- the scan, the check after an apply,
and the quick start-up path of a no-change run (``operations.quick``) -- kept
in a module that imports nothing but the standard library, so that the quick
path can use them without loading the store.

A folder's *marks* are the mtimes (ns) of its ``cur/`` and ``new/``: any add,
rename or unlink in them moves a mark, except within one tick of the file
system's timestamps -- which is why a young mark is *racy*
(:func:`racy_window_ns` says how young).
"""

from __future__ import annotations

import os
import stat

Marks = tuple[int, int]

SECOND_NS = 1_000_000_000
# Coarse file systems keep mtimes in 1 s steps (2 s on FAT): a mark younger than this
# may not move for a change made after it was read.
COARSE_RACY_NS = 2 * SECOND_NS
# On a file system that keeps sub-second mtimes the kernel stamps a change with its
# coarse clock, which lags the real time by at most one timer tick (1-10 ms); five
# ticks of the slowest timer, or twice the file system's own step if it is coarser.
FINE_RACY_NS = 50_000_000


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


def unlinked_marks(directory: str, *, itself: bool = True) -> Marks | None:
    """:func:`marks` of a folder none of whose parts :func:`symlinked_part` would
    find to be a symlink; None when one is, or the folder is gone. One ``lstat``
    of each part (the quick path's check of every folder: ``operations.quick``)."""
    found = []
    if itself and _is_link(directory):
        return None
    for sub in ("cur", "new", "tmp"):
        try:
            st = os.lstat(os.path.join(directory, sub))
        except (FileNotFoundError, NotADirectoryError):
            found.append(0)
            continue
        if stat.S_ISLNK(st.st_mode):
            return None
        found.append(st.st_mtime_ns if stat.S_ISDIR(st.st_mode) else 0)
    if found[:2] == [0, 0] and not _is_real_dir(directory):
        return None
    return (found[0], found[1])


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
