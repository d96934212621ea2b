"""kill -9 during backup, forget and prune: the archive stays checkable and every kept
snapshot restores exactly (archive-v1 §10)."""

from __future__ import annotations

import pytest

from bundlesync.operations.demo import populate
from bundlesync.operations.failpoints import CRASH_EXIT
from bundlesync.stores.base import INBOX
from tests.archive.conftest import CliBackups
from tests.archive.views import View, snapshot_view, store_view


def _views(cli: CliBackups) -> dict[str, View]:
    reader = cli.reader()
    return {s.id: snapshot_view(reader, s.id) for s in reader.snapshots()}


def _assert_sound(cli: CliBackups) -> None:
    out = cli.run("check", str(cli.archive), "--read-data", home=False)
    assert out.returncode == 0, out.stdout + out.stderr


def _change(cli: CliBackups) -> None:
    user = "alice@example.org"
    for message in cli.store.messages(user, INBOX)[:2]:
        cli.store.expunge(user, INBOX, message.key)
    populate_more = cli.store.messages(user, ("Sent",))[0]
    cli.store.set_flags(user, ("Sent",), populate_more.key, frozenset({"\\Seen"}))


@pytest.mark.parametrize("point", ["archive-pack:1", "archive-index:1"])
def test_kill_during_backup(cli: CliBackups, point: str) -> None:
    populate(cli.store, per_folder=4)
    assert cli.backup().returncode == 0
    before = _views(cli)
    _change(cli)
    crashed = cli.backup(crash=point)
    assert crashed.returncode == CRASH_EXIT
    assert _views(cli) == before  # no half snapshot
    _assert_sound(cli)
    assert cli.backup().returncode == 0
    reader = cli.reader()
    assert snapshot_view(reader, reader.snapshots()[-1].id) == store_view(cli.store)
    assert cli.run("prune", str(cli.archive)).returncode == 0
    _assert_sound(cli)


@pytest.mark.parametrize("point", ["forget:1", "prune-pack:1", "prune-index:1",
                                   "prune-delete:1", "prune-delete:2"])
def test_kill_during_forget_and_prune(cli: CliBackups, point: str) -> None:
    populate(cli.store, per_folder=4)
    assert cli.backup().returncode == 0
    _change(cli)
    assert cli.backup().returncode == 0
    _change(cli)
    assert cli.backup().returncode == 0
    before = _views(cli)
    newest = cli.reader().snapshots()[-1].id
    crashed = cli.run("forget", str(cli.archive), "--keep-last", "1", "--prune", crash=point)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    _assert_sound(cli)
    after = _views(cli)
    assert newest in after
    assert all(after[s] == before[s] for s in after)  # what is kept restores as before
    done = cli.run("forget", str(cli.archive), "--keep-last", "1", "--prune")
    assert done.returncode == 0, done.stderr
    assert _views(cli) == {newest: before[newest]}
    _assert_sound(cli)
