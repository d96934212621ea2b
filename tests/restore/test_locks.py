"""Reader locks (archive-v1 §11.2): restore, view, check and snapshots share an
archive; prune takes it alone, waits (--lock-wait) or refuses naming the reader; a dead
reader's lock is broken; a reader on a read-only medium goes on without one."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.archive.errors import ArchiveError, ArchiveLocked
from bundlesync.archive.locks import (
    EXCLUSIVE_NAME,
    LOCKS_DIR,
    exclusive_lock,
    live_readers,
    reader_lock,
)
from bundlesync.errors import EXIT_LOCKED
from bundlesync.operations.demo import populate
from bundlesync.operations.failpoints import CRASH_EXIT
from bundlesync.stores.base import INBOX
from bundlesync.stores.maildir import MaildirStore
from tests.archive.conftest import CliBackups

USER = "alice@example.org"


@pytest.fixture
def cli(tmp_path: Path) -> CliBackups:
    cli = CliBackups(tmp_path)
    populate(cli.store, per_folder=3)
    assert cli.backup().returncode == 0
    for message in cli.store.messages(USER, INBOX)[:2]:
        cli.store.expunge(USER, INBOX, message.key)
    assert cli.backup().returncode == 0
    return cli


def _forget_oldest(cli: CliBackups) -> None:
    """Leave prune something to delete: the first snapshot's expunged bodies."""
    done = cli.run("forget", str(cli.archive), "--keep-last", "1")
    assert done.returncode == 0, done.stderr


def _archive_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _restore(cli: CliBackups, target: Path, *, crash: str | None = None,
             archive: Path | None = None) -> subprocess.CompletedProcess[str]:
    return cli.run("restore", str(archive or cli.archive), "--at", "latest", "--into",
                   str(target / "%d" / "%n" / "Maildir"), crash=crash)


def _count(store: MaildirStore) -> int:
    return sum(len(store.messages(user, folder.path)) for user in store.users()
               for folder in store.folders(user))


def test_a_reader_holding_the_lock_makes_prune_refuse_naming_it(cli: CliBackups) -> None:
    _forget_oldest(cli)
    before = _archive_files(cli.archive)
    with reader_lock(cli.archive, op="restore") as lock:
        assert lock.held
        refused = cli.run("prune", str(cli.archive))
        # ... and forget --prune forgets, then refuses to prune the same way.
        refused_too = cli.run("forget", str(cli.archive), "--keep-last", "1", "--prune")
    assert refused.returncode == EXIT_LOCKED
    assert f"is being read by process {os.getpid()} on {socket.gethostname()} (restore" \
        in refused.stderr
    assert "--lock-wait" in refused.stderr
    assert refused_too.returncode == EXIT_LOCKED
    assert _archive_files(cli.archive) == before  # nothing deleted, no lock left
    pruned = cli.run("prune", str(cli.archive))
    assert pruned.returncode == 0, pruned.stderr
    assert _archive_files(cli.archive) != before


def test_prune_waits_for_readers_with_lock_wait(cli: CliBackups) -> None:
    _forget_oldest(cli)
    with contextlib.ExitStack() as stack:
        stack.enter_context(reader_lock(cli.archive, op="view"))
        stack.enter_context(reader_lock(cli.archive, op="check"))
        timer = threading.Timer(0.5, stack.close)
        timer.start()
        started = time.monotonic()
        pruned = cli.run("--lock-wait", "30", "prune", str(cli.archive))
        timer.join()
    assert pruned.returncode == 0, pruned.stderr
    assert time.monotonic() - started >= 0.5
    assert not (cli.archive / LOCKS_DIR).exists()


def test_readers_wait_for_or_refuse_a_running_prune(cli: CliBackups, tmp_path: Path) -> None:
    with exclusive_lock(cli.archive, op="prune"):
        refused = _restore(cli, tmp_path / "r1")
        checked = cli.run("check", str(cli.archive))
    assert refused.returncode == EXIT_LOCKED
    assert f"is being pruned by process {os.getpid()}" in refused.stderr
    assert not (tmp_path / "r1").exists()  # refused before anything was written
    assert checked.returncode == EXIT_LOCKED
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive_lock(cli.archive, op="prune"))
        timer = threading.Timer(0.3, stack.close)
        timer.start()
        waited = cli.run("--lock-wait", "30", "check", str(cli.archive))
        timer.join()
    assert waited.returncode == 0, waited.stderr


def test_snapshots_is_a_reader_that_waits_for_or_refuses_a_running_prune(
        cli: CliBackups) -> None:
    with exclusive_lock(cli.archive, op="prune"):
        refused = cli.run("snapshots", str(cli.archive))
    assert refused.returncode == EXIT_LOCKED
    assert f"is being pruned by process {os.getpid()}" in refused.stderr
    assert "snapshot(s)" not in refused.stdout
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive_lock(cli.archive, op="prune"))
        timer = threading.Timer(0.3, stack.close)
        timer.start()
        waited = cli.run("--lock-wait", "30", "snapshots", str(cli.archive))
        timer.join()
    assert waited.returncode == 0, waited.stderr
    assert "2 snapshot(s)" in waited.stdout
    assert not (cli.archive / LOCKS_DIR).exists()  # its reader lock is gone again


def test_backups_run_beside_readers(cli: CliBackups) -> None:
    with reader_lock(cli.archive, op="restore"):
        assert cli.backup().returncode == 0


def test_a_dead_readers_lock_is_broken(cli: CliBackups) -> None:
    locks = cli.archive / LOCKS_DIR
    locks.mkdir()
    host = socket.gethostname()
    # A process that is gone, and a pid now used by another process (this one)
    # that started at another time than the one that wrote the lock.
    (locks / "read-dead").write_text(f"pid={_dead_pid()} host={host} op=restore time=1\n")
    (locks / "read-reused").write_text(f"pid={os.getpid()} host={host} op=view time=1 "
                                       "start=1\n")
    (locks / "read-unfinished").write_text("")
    old = time.time() - 3600
    os.utime(locks / "read-unfinished", (old, old))
    assert live_readers(cli.archive) == []
    assert sorted(p.name for p in locks.iterdir()) == []
    # The same for a prune that died holding its lock: readers break it.
    (locks / EXCLUSIVE_NAME).write_text(f"pid={_dead_pid()} host={host} op=prune time=1\n")
    assert cli.run("check", str(cli.archive)).returncode == 0
    assert not locks.exists()


def test_another_hosts_reader_lock_holds_for_a_day(cli: CliBackups) -> None:
    locks = cli.archive / LOCKS_DIR
    locks.mkdir()
    lock = locks / "read-elsewhere"
    lock.write_text("pid=1 host=other.example.org op=restore time=1\n")
    refused = cli.run("prune", str(cli.archive))
    assert refused.returncode == EXIT_LOCKED
    assert "process 1 on other.example.org (restore" in refused.stderr
    assert "read-elsewhere" in refused.stderr  # the file to remove by hand
    day_ago = time.time() - 25 * 3600
    os.utime(lock, (day_ago, day_ago))
    assert cli.run("prune", str(cli.archive)).returncode == 0


def test_kill_9_of_a_reader_leaves_nothing_that_blocks(cli: CliBackups, tmp_path: Path) -> None:
    _forget_oldest(cli)
    target = tmp_path / "restored"
    crashed = _restore(cli, target, crash="restore:3")
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert [p.name[:5] for p in (cli.archive / LOCKS_DIR).iterdir()] == ["read-"]
    pruned = cli.run("prune", str(cli.archive))
    assert pruned.returncode == 0, pruned.stderr
    assert not (cli.archive / LOCKS_DIR).exists()
    again = _restore(cli, target)
    assert again.returncode == 0, again.stderr
    assert _count(MaildirStore(str(target / "%d" / "%n" / "Maildir"))) == _count(cli.store)


@contextlib.contextmanager
def _read_only_mount(directory: Path, at: Path) -> Iterator[Path]:
    """``directory`` mounted read-only at ``at`` (a bind mount: needs root)."""
    at.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    made = subprocess.run(["mount", "--bind", str(directory), str(at)], capture_output=True,
                          check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {made.stderr.decode(errors='replace')}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(at)], capture_output=True,
                            check=False)
        if ro.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield at
    finally:
        subprocess.run(["umount", str(at)], check=True)


def test_restore_check_and_view_from_a_read_only_medium(cli: CliBackups, tmp_path: Path) -> None:
    with _read_only_mount(cli.archive, tmp_path / "dvd") as dvd:
        with pytest.raises(OSError, match="Read-only file system"):
            (dvd / "probe").write_text("")
        target = tmp_path / "restored"
        done = _restore(cli, target, archive=dvd)
        assert done.returncode == 0, done.stderr
        assert _count(MaildirStore(str(target / "%d" / "%n" / "Maildir"))) == _count(cli.store)
        checked = cli.run("check", str(dvd), "--read-data")
        assert checked.returncode == 0, checked.stderr
        viewed = cli.run("view", str(dvd), "--into", str(tmp_path / "view"))
        assert viewed.returncode == 0, viewed.stderr
        listed = cli.run("snapshots", str(dvd))
        assert listed.returncode == 0, listed.stderr
        assert "2 snapshot(s)" in listed.stdout
        with reader_lock(dvd, op="restore") as lock:
            assert not lock.held
    assert not (cli.archive / LOCKS_DIR).exists()


def test_exclusive_lock_names_every_live_reader(tmp_path: Path) -> None:
    with reader_lock(tmp_path, op="restore"), reader_lock(tmp_path, op="view"), \
            pytest.raises(ArchiveLocked) as refused, exclusive_lock(tmp_path, op="prune"):
        pytest.fail("prune got the archive from two live readers")
    assert "(restore" in refused.value.message
    assert "(view" in refused.value.message
    assert not (tmp_path / LOCKS_DIR).exists()


def test_a_symlinked_locks_directory_is_refused_and_nothing_is_written_through_it(
        tmp_path: Path) -> None:
    archive, outside = tmp_path / "archive", tmp_path / "outside"
    archive.mkdir()
    outside.mkdir()
    stale = outside / (EXCLUSIVE_NAME)
    stale.write_text("pid=999999999 host=elsewhere op=prune\n")
    os.utime(stale, (0, 0))  # old enough to be broken, were it followed
    (archive / LOCKS_DIR).symlink_to(outside)
    for take in (lambda: reader_lock(archive, op="restore"),
                 lambda: exclusive_lock(archive, op="prune")):
        with pytest.raises(ArchiveError, match="not a directory") as refused, take():
            pytest.fail("a lock was taken through a symlink")
        assert refused.value.hint and "Remove" in refused.value.hint
    with pytest.raises(ArchiveError, match="not a directory"):
        live_readers(archive)
    assert sorted(p.name for p in outside.iterdir()) == [EXCLUSIVE_NAME]


def test_a_fifo_or_a_huge_file_under_a_lock_name_never_hangs_prune(tmp_path: Path) -> None:
    locks = tmp_path / LOCKS_DIR
    locks.mkdir()
    os.mkfifo(locks / "read-fifo")
    (locks / "read-huge").write_bytes(b"pid=1 " * 1_000_000)
    for name in ("read-fifo", "read-huge"):
        os.utime(locks / name, (0, 0))  # judged by age alone: long stale
    done = threading.Event()

    def prune() -> None:
        with exclusive_lock(tmp_path, op="prune"):
            done.set()

    worker = threading.Thread(target=prune, daemon=True)
    worker.start()
    worker.join(10)
    assert done.is_set(), "prune hung on a FIFO or a huge file in locks/"
    assert not (locks / "read-fifo").exists() and not (locks / "read-huge").exists()
