"""Writing files so that a crash leaves the old bytes or the new ones, never a mix.

Every file bundlesync writes goes through here: the loop that writes a whole
buffer (``os.write`` may write less than asked, on a full pipe or a signal), the
sync of a directory (a rename or unlink is durable only once its directory is
synced), and the atomic replacement of a small file (a temporary name of its own
in the same directory, fsync, rename over the target, fsync of the directory).

Temporary names start with '.' and end in '.tmp', so no reader of a drop, a
home or a Maildir takes one for the real file; they carry random letters, so two
writers of one file never share (or truncate) each other's temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write every byte of ``data`` to ``fd``; the number of bytes written."""
    view = memoryview(data)
    total = len(view)
    while view:
        view = view[os.write(fd, view):]
    return total


def fsync_dir(path: str | Path) -> None:
    """Make the entries of directory ``path`` (creates, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)`` (Linux), or None where there is none.

    Loaded on first use: ctypes is not needed by the commands that never sync
    a batch, and start-up time counts for them.
    """
    import ctypes  # noqa: PLC0415 -- see the docstring

    try:
        # The symbols already loaded into this process: libc's among them.
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs: list[Callable[[int], int] | None] = []


def sync_file_systems(paths: Iterable[str | Path]) -> None:
    """Make everything written on the file systems holding ``paths`` durable.

    One ``syncfs`` per file system instead of one fsync per file: a batch of
    thousands of new files costs one flush of the journal. Where ``syncfs`` is
    missing (not Linux) or fails, ``sync()`` does the same for every file
    system. Both wait until the data is on the disk (Linux since 2.6.39 for
    ``syncfs``; POSIX leaves ``sync`` free not to wait, Linux waits).
    """
    devices: dict[int, str] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            devices.setdefault(os.stat(path).st_dev, str(path))
    if not _syncfs:
        _syncfs.append(_load_syncfs())
    syncfs = _syncfs[0]
    if syncfs is None or not devices:
        os.sync()
        return
    for path in devices.values():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.sync()
            return
        try:
            if syncfs(fd) != 0:
                # A write-back error (EIO, ENOSPC): the batch is not durable.
                import ctypes  # noqa: PLC0415 -- loaded already by _load_syncfs

                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), path)
        finally:
            os.close(fd)


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (``.<name>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; file mode exactly ``mode``.

    Raises the ``OSError`` of the failing step (callers say what the file was);
    the temporary file is removed then, and ``path`` is left as it was.
    """
    temp = temp_path(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        try:
            # The umask may have removed bits asked for (0644 cards); fchmod makes
            # the mode exact either way.
            os.fchmod(fd, mode)
            write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    if sync:
        fsync_dir(path.parent)
