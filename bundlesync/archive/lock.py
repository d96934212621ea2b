"""The archive's writer lock: pid and host, stale detection (archive-v1 §11)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from bundlesync.archive.errors import ArchiveLocked
from bundlesync.stores.dotlock import process_alive

LOCK_NAME = "lock"
FOREIGN_STALE_S = 24 * 3600


# A lock file is a line of "key=value" words; anything longer is not ours.
MAX_LOCK_FILE = 4096


def read_lock_file(path: Path) -> tuple[dict[str, str], float] | None:
    """The ``key=value`` fields of the lock file ``path`` and its age in seconds; None
    if it is gone. Never through a symlink, never blocking on a FIFO, at most
    MAX_LOCK_FILE bytes: something else under a lock's name gives no fields (it is
    judged by its age alone, and removing it removes only that name)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    age = time.time() - st.st_mtime
    if not stat.S_ISREG(st.st_mode):
        return {}, age
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return {}, age
    try:
        text = os.read(fd, MAX_LOCK_FILE).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return dict(f.split("=", 1) for f in text.split() if "=" in f), age


@contextlib.contextmanager
def archive_lock(root: Path, op: str) -> Iterator[None]:
    """Hold the archive's lock; break a dead owner's lock; refuse a live one."""
    path = root / LOCK_NAME
    host = socket.gethostname()
    text = f"pid={os.getpid()} host={host} op={op} time={int(time.time() * 1000)}\n"
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            found = read_lock_file(path)
            if found is None:
                continue
            held, age = found
            pid = int(held.get("pid", "0")) if held.get("pid", "").isdigit() else 0
            same_host = held.get("host") == host
            stale = (same_host and (pid == 0 or not process_alive(pid))) or (
                not same_host and age > FOREIGN_STALE_S)
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise ArchiveLocked(
                f"The archive at {root} is locked by process {held.get('pid', '?')} on "
                f"{held.get('host', '?')} ({held.get('op', '?')}).") from None
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        break
    else:  # pragma: no cover - three races in a row
        raise ArchiveLocked(f"The archive at {root} could not be locked.")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
