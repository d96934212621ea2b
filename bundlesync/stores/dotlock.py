"""Dovecot's dotlock protocol, so that we and Dovecot never write one file at once.

A lock on ``F`` is the file ``F.lock``, created with O_EXCL. Two uses:

* a plain lock (``held``): the lock file holds ``<pid>:<host>``, and is
  removed when done. Dovecot takes ``dovecot-uidlist.lock`` this way.
* a replace lock (``replace_file``): the lock file receives the new content
  and is renamed over ``F`` (Dovecot's ``file_dotlock_replace``); used for
  ``dovecot-keywords`` and ``subscriptions``.

A lock is stale, and may be removed, when it has not changed for
``stale_after`` seconds, or at once when it names a process of this host that no
longer exists -- the rules Dovecot applies to its own locks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

from bundlesync.fsio import fsync_dir, write_all
from bundlesync.stores.errors import FolderLocked

CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE = 0o600
_POLL_S = 0.05

Owner = tuple[int, int] | None


def is_stale(lock: str, *, stale_after: float) -> bool:
    """True if ``lock`` may be removed (see the module text)."""
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        return False  # released meanwhile: the caller just tries again
    age = time.time() - st.st_mtime
    if age > stale_after:
        return True
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # released meanwhile, or not a file we can judge
    try:
        text = os.read(fd, 512).decode("ascii", "replace")
    finally:
        os.close(fd)
    pid_text, sep, host = text.partition(":")
    # A lock naming a process of this host that is gone is broken at once, as
    # Dovecot does; a lock without "pid:host" (still being written, or another
    # program's) waits for stale_after.
    if not sep or host.strip() != socket.gethostname() or not pid_text.isdigit():
        return False
    return not process_alive(int(pid_text))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return True
    return not (fields and fields[0] in (b"Z", b"X"))


def acquire(lock: str, *, stale_after: float, timeout: float) -> int:
    """Create ``lock`` exclusively and return its open descriptor; FolderLocked on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(lock, CREATE_FLAGS, FILE_MODE)
        except FileExistsError:
            pass
        if is_stale(lock, stale_after=stale_after):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            continue
        if time.monotonic() >= deadline:
            raise FolderLocked(f"{lock} is held by another program (waited {timeout:g} s)")
        time.sleep(_POLL_S)


@contextlib.contextmanager
def held(lock: str, *, stale_after: float, timeout: float) -> Iterator[None]:
    """Hold a plain dotlock for the duration of the ``with`` block."""
    fd = acquire(lock, stale_after=stale_after, timeout=timeout)
    try:
        # "pid:host" lets Dovecot override the lock at once if we die holding it.
        write_all(fd, f"{os.getpid()}:{socket.gethostname()}".encode())
    finally:
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def replace_file(
    path: str,
    update: Callable[[bytes | None], bytes | None],
    *,
    stale_after: float,
    timeout: float,
    owner: Owner,
    fsync: bool,
    newer_mtime: bool = False,
    orphaned_lock: bool = False,
) -> bool:
    """Replace ``path`` through ``path.lock``; True if it was replaced.

    ``update`` receives the current bytes (None if the file is missing), read
    while the lock is held, and returns the new bytes or None to keep the file.
    With ``newer_mtime`` the new file's mtime is at least one second above the
    old one: Dovecot re-reads dovecot-keywords only when its mtime (in seconds)
    changes. ``orphaned_lock``: the caller holds the outer lock that every writer
    of ``path`` takes first, so an existing ``path.lock`` is a dead writer's.
    """
    lock = path + ".lock"
    if orphaned_lock:
        # The caller holds the lock every writer of this file takes first: a lock
        # file found now was left by a writer that died (our replace locks hold the
        # new content, not "pid:host", so is_stale could not tell for 2 minutes).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    fd = acquire(lock, stale_after=stale_after, timeout=timeout)
    replaced = False
    try:
        try:
            try:
                with open(path, "rb") as handle:
                    old: bytes | None = handle.read()
                old_mtime = int(os.stat(path).st_mtime)
            except FileNotFoundError:
                old, old_mtime = None, 0
            new = update(old)
            if new is not None:
                write_all(fd, new)
                if owner is not None:
                    os.fchown(fd, *owner)
                if newer_mtime:
                    mtime = max(int(time.time()), old_mtime + 1)
                    os.utime(fd, (mtime, mtime))
                if fsync:
                    os.fsync(fd)
        finally:
            os.close(fd)
        if new is not None:
            os.rename(lock, path)
            replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
    if replaced and fsync:
        fsync_dir(os.path.dirname(path))
    return replaced
