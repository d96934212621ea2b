"""Dovecot's dotlock protocol: exclusive creation, staleness, replace-by-rename."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundlesync.stores import dotlock
from bundlesync.stores.errors import FolderLocked

HOST = os.uname().nodename


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_held_lock_names_its_process_and_is_removed_afterwards(tmp_path: Path) -> None:
    lock = tmp_path / "dovecot-uidlist.lock"
    with dotlock.held(str(lock), stale_after=120, timeout=1):
        assert lock.read_text() == f"{os.getpid()}:{HOST}"
    assert not lock.exists()


def test_a_lock_of_a_live_process_is_respected(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(f"{os.getpid()}:{HOST}")
    age(lock, 10)
    assert not dotlock.is_stale(str(lock), stale_after=120)
    started = time.monotonic()
    with pytest.raises(FolderLocked):
        dotlock.acquire(str(lock), stale_after=120, timeout=0.2)
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("content", "seconds", "stale"),
    [
        ("DEAD", 10, True),  # owner gone
        ("DEAD", 1, True),  # owner gone: broken at once, however young
        ("", 10, False),  # no owner recorded: wait for the timeout
        ("", 200, True),  # unchanged for longer than stale_after
        ("1:some-other-host", 10, False),  # another host's process: cannot check
    ],
)
def test_staleness_follows_dovecots_rules(
    tmp_path: Path, content: str, seconds: float, stale: bool
) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(content.replace("DEAD", f"{dead_pid()}:{HOST}"))
    age(lock, seconds)
    assert dotlock.is_stale(str(lock), stale_after=120) is stale


def test_replace_writes_through_the_lock_file_and_renames(tmp_path: Path) -> None:
    target = tmp_path / "subscriptions"
    target.write_bytes(b"old")
    seen: list[bytes | None] = []

    def update(old: bytes | None) -> bytes:
        seen.append(old)
        assert (tmp_path / "subscriptions.lock").exists()
        return b"new"

    assert dotlock.replace_file(str(target), update, stale_after=30, timeout=1, owner=None,
                                fsync=True)
    assert seen == [b"old"]
    assert target.read_bytes() == b"new"
    assert not (tmp_path / "subscriptions.lock").exists()


def test_replace_can_keep_the_file_and_always_releases_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"same")
    inode = target.stat().st_ino
    assert not dotlock.replace_file(str(target), lambda old: None, stale_after=30, timeout=1,
                                    owner=None, fsync=False)
    assert target.stat().st_ino == inode

    def broken(old: bytes | None) -> bytes:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        dotlock.replace_file(str(target), broken, stale_after=30, timeout=1, owner=None,
                             fsync=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_replace_of_a_missing_file_creates_it_with_a_newer_mtime(tmp_path: Path) -> None:
    target = tmp_path / "dovecot-keywords"
    assert dotlock.replace_file(str(target), lambda old: b"0 a\n", stale_after=30, timeout=1,
                                owner=None, fsync=False, newer_mtime=True)
    assert target.read_bytes() == b"0 a\n"
    assert target.stat().st_mtime >= int(time.time()) - 1
