"""Backups with reader processes (--jobs): the same snapshot as one process writes,
a worker that dies or fails costs nothing but time, kill -9 leaves no worker behind."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.archive import backup as backup_module
from bundlesync.archive import workers
from bundlesync.archive.backup import BackupReport, run_backup
from bundlesync.archive.repository import create_archive, open_archive
from bundlesync.archive.users import UserSelection
from bundlesync.errors import StoreError
from bundlesync.operations.config import MailboxFilter
from bundlesync.operations.demo import demo_message, populate
from bundlesync.operations.failpoints import CRASH_EXIT
from bundlesync.stores.base import INBOX
from bundlesync.stores.maildir import MaildirStore
from tests.archive.conftest import Backups, CliBackups
from tests.archive.views import snapshot_view, store_view

USER = "alice@example.org"


def _fill(store: MaildirStore, count: int, *, large: int = 0, start: int = 0) -> None:
    """``count`` more messages in alice's INBOX, ``large`` of them about 600 KB (a
    worker's answer is then cut into several frames)."""
    store.ensure_user(USER)
    for i in range(start, start + count):
        data, when = demo_message(USER, 5000 + i)
        if i < large:
            data += b"x" * 600_000 + str(i).encode()
        store.add_message(USER, INBOX, key=f"{when}.M{i}P9.fill", data=data,
                          flags=frozenset(), internal_date=when)


def _back_up(backups: Backups, path: Path, *, jobs: int) -> BackupReport:
    create_archive(path, identity=backups.identity, recovery=[], kdf_log_n=14)
    archive = open_archive(path, secret=backups.identity)
    return run_backup(archive, backups.store, users=UserSelection(), filters=MailboxFilter(),
                      now_ms=1_900_000_000_000, jobs=jobs)


def test_a_parallel_backup_writes_the_snapshot_one_process_writes(
        backups: Backups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(backups.store, per_folder=3)
    _fill(backups.store, 150, large=4)
    alone = _back_up(backups, tmp_path / "one", jobs=1)
    # Every folder, however few its new messages, goes to the workers here.
    monkeypatch.setattr(backup_module, "PROCESS_MIN_KEYS", 1)
    spread = _back_up(backups, tmp_path / "two", jobs=3)  # two reader processes
    assert spread.failed == {} and alone.failed == {}
    for field in ("users", "folders", "messages", "bodies_added", "body_bytes_read"):
        assert getattr(spread, field) == getattr(alone, field), field
    one, two = open_archive(tmp_path / "one", secret=backups.identity), open_archive(
        tmp_path / "two", secret=backups.identity)
    [first], [second] = one.snapshots(), two.snapshots()
    # The same listings (trees are named by their bytes) and the same bodies.
    assert first.users == second.users
    assert snapshot_view(two, second.id) == store_view(backups.store)


def _expected(store: MaildirStore, keys: list[str]) -> list[tuple[str, bytes, int, bytes]]:
    return list(workers.read_messages(store, USER, INBOX, keys))


def test_users_new_to_the_archive_are_read_ahead_by_a_reader(
        backups: Backups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(backups.store, per_folder=1)
    _fill(backups.store, 70)
    asked: list[tuple[str, bool]] = []
    real_read = workers.ReadWorkers.read

    def spy(self: workers.ReadWorkers, user: str, path: tuple[str, ...], keys: list[str],
            *, ahead: bool = False) -> Iterator[workers.ReadMessage]:
        asked.append((user, ahead))
        return real_read(self, user, path, keys, ahead=ahead)

    monkeypatch.setattr(workers.ReadWorkers, "read", spy)
    _back_up(backups, tmp_path / "two", jobs=2)
    assert asked == [(USER, True)]  # the one folder with enough to read
    asked.clear()
    _fill(backups.store, 130, start=70)  # in a user the archive knows
    run_backup(open_archive(tmp_path / "two", secret=backups.identity), backups.store,
               users=UserSelection(), filters=MailboxFilter(), jobs=2)
    assert asked == [(USER, False)]  # only the new messages are read: nothing ahead


def test_a_worker_reads_a_user_ahead_once(backups: Backups) -> None:
    _fill(backups.store, 10)
    ahead = workers._ReadAhead(backups.store)
    done = threading.Event()
    seen: list[str] = []

    def prefetch(user: str) -> None:
        seen.append(user)
        done.set()

    backups.store.prefetch = prefetch  # type: ignore[method-assign]
    ahead.ask(USER)
    ahead.ask(USER)
    assert done.wait(10)
    assert seen == [USER]


def test_a_worker_that_dies_is_not_used_again_and_nothing_is_lost(backups: Backups) -> None:
    _fill(backups.store, 200, large=3)
    keys = sorted(backups.store.message_names(USER, INBOX))
    expected = _expected(backups.store, keys)
    pool = workers.ReadWorkers(backups.store, 2)
    try:
        got = []
        for number, item in enumerate(pool.read(USER, INBOX, keys)):
            got.append(item)
            if number == 40:
                pool.workers[1].proc.kill()  # as the OOM killer would
        assert got == expected
        assert pool.broken and pool.workers == []
        assert list(pool.read(USER, INBOX, keys)) == expected  # now read here
    finally:
        pool.close()


def test_a_reader_stopped_early_leaves_the_workers_ready(backups: Backups) -> None:
    _fill(backups.store, 300)
    keys = sorted(backups.store.message_names(USER, INBOX))
    pool = workers.ReadWorkers(backups.store, 2)
    try:
        reading = pool.read(USER, INBOX, keys)
        next(reading)
        reading.close()  # e.g. the backup of this user failed: the answers owed are dropped
        assert not pool.broken
        assert list(pool.read(USER, INBOX, keys[100:])) == _expected(backups.store, keys[100:])
        processes = [w.proc for w in pool.workers]
    finally:
        pool.close()
    assert all(p.returncode == 0 for p in processes)  # they ended when their input did


def test_closing_while_answers_are_owed_ends_the_workers_at_once(backups: Backups) -> None:
    # Ctrl-C in the middle of a folder: the reader is still referenced by the
    # traceback when the backup closes its workers, which are writing answers.
    _fill(backups.store, 300, large=20)
    keys = sorted(backups.store.message_names(USER, INBOX))
    pool = workers.ReadWorkers(backups.store, 2)
    reading = pool.read(USER, INBOX, keys)
    next(reading)
    processes = [w.proc for w in pool.workers]
    started = time.monotonic()
    pool.close()
    reading.close()
    assert time.monotonic() - started < 5
    assert all(p.returncode is not None for p in processes)


def test_workers_that_cannot_start_leave_the_reading_here(
        backups: Backups, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(backups.store, 70)
    keys = sorted(backups.store.message_names(USER, INBOX))
    started: list[workers._Worker] = []
    real_init = workers._Worker.__init__

    def second_fails(self: workers._Worker, template: str) -> None:
        if started:
            raise OSError(11, "Resource temporarily unavailable")  # fork: EAGAIN
        real_init(self, template)
        started.append(self)

    monkeypatch.setattr(workers._Worker, "__init__", second_fails)
    pool = workers.ReadWorkers(backups.store, 2)
    try:
        assert list(pool.read(USER, INBOX, keys)) == _expected(backups.store, keys)
        assert pool.broken and pool.workers == []
        assert started[0].proc.returncode is not None  # the one that started was ended
    finally:
        pool.close()


def test_a_store_error_in_a_worker_is_the_error_reading_here_raises(backups: Backups) -> None:
    _fill(backups.store, 100)
    keys = sorted(backups.store.message_names(USER, INBOX))
    pool = workers.ReadWorkers(backups.store, 2)
    try:
        with pytest.raises(StoreError) as here:
            list(workers.read_messages(backups.store, USER, ("Gone",), keys))
        with pytest.raises(StoreError) as there:
            list(pool.read(USER, ("Gone",), keys))
        assert there.value.message == here.value.message
        assert "does not exist" in there.value.message
        assert not pool.broken
        assert list(pool.read(USER, INBOX, keys)) == _expected(backups.store, keys)
    finally:
        pool.close()


def test_a_user_whose_folder_fails_in_a_worker_is_reported_and_others_are_backed_up(
        backups: Backups, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(backups.store, per_folder=2)
    _fill(backups.store, 80)
    monkeypatch.setattr(backup_module, "PROCESS_MIN_KEYS", 1)
    real_read = workers.ReadWorkers.read

    def vanishing(self: workers.ReadWorkers, user: str, path: tuple[str, ...],
                  keys: list[str], *, ahead: bool = False) -> Iterator[workers.ReadMessage]:
        if user == USER and path == INBOX:
            # The folder is gone between its listing and its reading (a rename).
            os.rename(backups.store.maildir_path(USER), backups.store.maildir_path(USER) + "-")
        return real_read(self, user, path, keys, ahead=ahead)

    monkeypatch.setattr(workers.ReadWorkers, "read", vanishing)
    report = run_backup(open_archive(backups.path, secret=backups.identity), backups.store,
                        users=UserSelection(), filters=MailboxFilter(), jobs=2)  # one reader
    assert set(report.failed) == {USER}
    assert "does not exist" in report.failed[USER]
    assert report.users == 1  # bob


@pytest.mark.slow
def test_kill_during_a_parallel_backup_leaves_no_worker_and_a_sound_archive(
        cli: CliBackups) -> None:
    populate(cli.store, per_folder=2)
    _fill(cli.store, 200)
    crashed = cli.backup("--jobs", "3", crash="archive-read:70")
    # The run returned: its workers, which share its stderr, ended with it.
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert "Traceback" not in crashed.stderr
    assert cli.reader().snapshots() == []
    out = cli.backup("--jobs", "2")
    assert out.returncode == 0, out.stderr
    reader = cli.reader()
    assert snapshot_view(reader, reader.snapshots()[-1].id) == store_view(cli.store)
    checked = cli.run("check", str(cli.archive), "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_jobs_must_be_a_positive_number(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    out = cli.backup("--jobs", "0")
    assert out.returncode == 2 and "--jobs" in out.stderr
    assert not cli.archive.exists()


def test_the_default_is_one_job_per_cpu() -> None:
    assert backup_module.default_jobs() == len(os.sched_getaffinity(0))
