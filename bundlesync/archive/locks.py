"""Reader locks: readers of an archive share it, prune takes it alone (archive-v1 §11.2).

Readers (restore, view, check, snapshots) need every pack and index that was there
when they started; prune deletes packs and indexes. Each reader announces itself
with a file ``locks/read-<random>``; prune announces itself with ``locks/exclusive``.
Both sides announce first and then look for the other, so at least one of two racing runs
sees the other (the Dekker pattern on files): a reader that sees a live
``exclusive`` withdraws and waits or refuses; prune that sees a live reader waits
or refuses, holding ``exclusive`` while it waits so a stream of new readers cannot
starve it. Backups only add files and take neither lock.

A lock file holds ``pid=<pid> host=<host> op=<op> time=<ms> start=<ticks>``, like
the writer lock (:mod:`bundlesync.archive.lock`) and Dovecot's dotlocks. A lock of
this host whose process is gone (or whose pid now belongs to a process started at
another time) is stale and is removed by whoever finds it; so a reader killed by
``kill -9`` never blocks a later prune. A lock of another host is stale after 24
hours. On a read-only medium (a DVD, a read-only mount) no lock can be written,
and none is needed: nothing can prune there either; the reader goes on without one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bundlesync.archive.errors import ArchiveError, ArchiveLocked
from bundlesync.archive.lock import read_lock_file
from bundlesync.fsio import write_all
from bundlesync.stores.dotlock import process_alive

LOCKS_DIR = "locks"
EXCLUSIVE_NAME = "exclusive"
READER_PREFIX = "read-"
FOREIGN_STALE_S = 24 * 3600  # as the writer lock (archive-v1 §11)
UNREADABLE_STALE_S = 60  # a lock file still empty after this long was never finished
RETRY_S = 0.2
# Errors that mean "this reader cannot write here": the medium is read-only, or
# this user may not write to the archive. Neither can this user prune it.
_CANNOT_WRITE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

Sleep = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a reader or prune lock, as its file says."""

    path: Path
    pid: int
    host: str
    op: str
    time_ms: int

    def describe(self) -> str:
        """``process 123 on host (restore, since 2026-11-30 20:41:02 UTC)``."""
        since = ""
        if self.time_ms:
            moment = dt.datetime.fromtimestamp(self.time_ms / 1000, dt.UTC)
            since = f", since {moment:%Y-%m-%d %H:%M:%S} UTC"
        return f"process {self.pid or '?'} on {self.host or '?'} ({self.op or '?'}{since})"


@dataclass(frozen=True, slots=True)
class ReaderLock:
    """What :func:`reader_lock` got: ``held`` is False on a medium it cannot write."""

    held: bool
    reason: str = ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc has none):
    tells a reused pid from the process that wrote the lock."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _lock_text(op: str) -> bytes:
    pid = os.getpid()
    return (f"pid={pid} host={socket.gethostname()} op={op} "
            f"time={int(time.time() * 1000)} start={_process_start(pid)}\n").encode()


def _read_holder(path: Path) -> tuple[LockHolder, dict[str, str], float] | None:
    """The holder, the raw fields and the file's age; None if the file is gone."""
    found = read_lock_file(path)
    if found is None:
        return None
    fields, age = found
    pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else 0
    time_ms = int(fields["time"]) if fields.get("time", "").isdigit() else 0
    return LockHolder(path, pid, fields.get("host", ""), fields.get("op", ""), time_ms), \
        fields, age


def _is_stale(holder: LockHolder, fields: dict[str, str], age: float) -> bool:
    if not fields:  # created, not yet written: its writer is in the middle of it
        return age > UNREADABLE_STALE_S
    if holder.host != socket.gethostname():
        return age > FOREIGN_STALE_S
    if not process_alive(holder.pid):
        return True
    start = fields.get("start", "")
    return bool(start) and start != _process_start(holder.pid)


def live_holder(path: Path) -> LockHolder | None:
    """The live holder of the lock file ``path``; a stale one is removed (None)."""
    found = _read_holder(path)
    if found is None:
        return None
    holder, fields, age = found
    if _is_stale(holder, fields, age):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
    return holder


def _locks_dir(root: Path) -> Path:
    """``root/locks``, refused if it is there as anything but a directory: through a
    symlink, lock files would be created, and stale ones removed, outside the archive."""
    directory = root / LOCKS_DIR
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return directory
    if not stat.S_ISDIR(st.st_mode):
        raise ArchiveError(f"{directory} is not a directory (a symlink or another file); "
                           "bundlesync keeps the archive's lock files there and does not "
                           "follow it.", hint=f"Remove {directory}; it is made again.")
    return directory


def live_readers(root: Path) -> list[LockHolder]:
    """Every live reader of the archive at ``root``; stale reader locks are removed."""
    directory = _locks_dir(root)
    try:
        names = sorted(p.name for p in directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        if name.startswith(READER_PREFIX):
            holder = live_holder(directory / name)
            if holder is not None:
                found.append(holder)
    return found


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (O_EXCL: FileExistsError if it is there) holding ``data``, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_in_locks(root: Path, name: str, data: bytes) -> Path:
    """Create ``locks/<name>``; makes ``locks/`` first (a releaser may just remove it)."""
    for _attempt in range(5):
        with contextlib.suppress(FileExistsError):
            (root / LOCKS_DIR).mkdir(mode=0o755)
        directory = _locks_dir(root)
        try:
            _write_new(directory / name, data)
        except FileNotFoundError:
            continue  # locks/ was removed between the mkdir and the create
        return directory / name
    raise FileNotFoundError(errno.ENOENT, "lock directory keeps disappearing", str(directory))


def _release(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    # Leave no empty locks/ behind; another run's file keeps it (rmdir then fails).
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def _refuse(root: Path, holders: list[LockHolder], *, waited: float, reading: bool) -> None:
    who = "; ".join(h.describe() for h in holders)
    if reading:
        message = f"The archive at {root} is being pruned by {who}."
        what = "the prune"
    else:
        message = f"The archive at {root} is being read by {who}: prune would remove what " \
            "it reads."
        what = "the reader" if len(holders) == 1 else "the readers"
    if waited:
        hint = (f"It was still held after --lock-wait {waited:g} s: wait longer for {what} "
                "to finish, or check that process.")
    else:
        hint = (f"Wait for {what} to finish, or pass --lock-wait SECONDS to wait for it. A "
                "lock left by a process that died on this host is removed by itself; one "
                f"from another host expires after 24 hours, or remove {LOCKS_DIR}/"
                f"{holders[0].path.name} from the archive by hand once that run is gone.")
    raise ArchiveLocked(message, hint=hint)


@contextlib.contextmanager
def reader_lock(root: Path, *, op: str, wait: float = 0.0,
                sleep: Sleep = time.sleep) -> Iterator[ReaderLock]:
    """Share the archive with other readers for the block; wait up to ``wait``
    seconds for a prune to finish, then refuse (ArchiveLocked, exit 75). On a
    medium this process cannot write, go on without a lock (``held`` False)."""
    deadline = time.monotonic() + wait
    text = _lock_text(op)
    while True:
        try:
            mine = _create_in_locks(root, READER_PREFIX + secrets.token_hex(8), text)
        except OSError as exc:
            if exc.errno in _CANNOT_WRITE:
                yield ReaderLock(held=False, reason=exc.strerror or str(exc))
                return
            raise ArchiveError(f"Cannot take a reader lock in {root / LOCKS_DIR}: "
                               f"{exc.strerror or exc}.") from None
        pruner = live_holder(root / LOCKS_DIR / EXCLUSIVE_NAME)
        if pruner is None:
            break
        _release(mine)
        left = deadline - time.monotonic()
        if left <= 0:
            _refuse(root, [pruner], waited=wait, reading=True)
        sleep(min(RETRY_S, left))
    try:
        yield ReaderLock(held=True)
    finally:
        _release(mine)


@contextlib.contextmanager
def exclusive_lock(root: Path, *, op: str, wait: float = 0.0,
                   sleep: Sleep = time.sleep) -> Iterator[None]:
    """Hold the archive alone against readers (prune); wait up to ``wait`` seconds
    for live readers to finish, then refuse naming them (ArchiveLocked, exit 75).
    Stale reader locks of dead processes are removed on the way."""
    deadline = time.monotonic() + wait
    text = _lock_text(op)
    path = root / LOCKS_DIR / EXCLUSIVE_NAME
    while True:
        try:
            _create_in_locks(root, EXCLUSIVE_NAME, text)
            break
        except FileExistsError:
            other = live_holder(path)
            if other is None:
                continue  # stale, removed: try again at once
            left = deadline - time.monotonic()
            if left <= 0:
                _refuse(root, [other], waited=wait, reading=True)
            sleep(min(RETRY_S, left))
        except OSError as exc:
            raise ArchiveError(f"Cannot lock the archive at {root} against readers: "
                               f"{exc.strerror or exc}.") from None
    try:
        while True:
            readers = live_readers(root)
            if not readers:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                _refuse(root, readers, waited=wait, reading=False)
            sleep(min(RETRY_S, left))
        yield
    finally:
        _release(path)
