"""The archive's writer lock: pid and host, stale detection (archive-v1 §11)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from bundlesync.archive.errors import ArchiveLocked

LOCK_NAME = "lock"
FOREIGN_STALE_S = 24 * 3600


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(text: str) -> dict[str, str]:
    return dict(f.split("=", 1) for f in text.split() if "=" in f)


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
            try:
                held = _parse(path.read_text(encoding="utf-8", errors="replace"))
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            pid = int(held.get("pid", "0")) if held.get("pid", "").isdigit() else 0
            same_host = held.get("host") == host
            stale = (same_host and (pid == 0 or not pid_alive(pid))) or (
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
