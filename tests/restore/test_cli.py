"""The restore and view commands: backup -> view/restore on real archives, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundlesync.cli import main
from bundlesync.operations.demo import populate
from bundlesync.stores.maildir import MaildirStore
from tests.restore.archives import PASSPHRASE, TestArchive
from tests.restore.source import day_ms


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestArchive:
    monkeypatch.setenv("BUNDLESYNC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("BUNDLESYNC_HOME", str(tmp_path / "no-site"))
    return TestArchive(tmp_path / "archive")


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    store = MaildirStore(str(tmp_path / "mail" / "%d" / "%n" / "Maildir"))
    populate(store, per_folder=2)
    return store


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_view_of_a_real_archive_adds_each_new_date_once(
    archive: TestArchive, store: MaildirStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive.backup(store, now_ms=day_ms("2026-11-01"))
    archive.backup(store, now_ms=day_ms("2026-11-02"))
    view = tmp_path / "view"
    code, out, err = run(capsys, "view", str(archive.path), "--into", str(view))
    assert code == 0, err
    assert out.splitlines()[-1] == "4 dates added, 0 removed, 0 unchanged"  # 2 users x 2 dates
    archive.backup(store, now_ms=day_ms("2026-11-03"))
    code, out, err = run(capsys, "view", str(archive.path), "--into", str(view))
    assert code == 0, err
    assert out.splitlines()[-1] == "2 dates added, 0 removed, 4 unchanged"
    inbox = view / "users" / "alice@example.org" / "2026-11-03" / "INBOX" / "cur"
    assert len(list(inbox.iterdir())) == len(store.messages("alice@example.org", ("INBOX",)))


def test_restore_into_from_a_real_archive_then_beside_finds_nothing_missing(
    archive: TestArchive, store: MaildirStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive.backup(store, now_ms=day_ms("2026-11-01"))
    target = tmp_path / "restored" / "%d" / "%n" / "Maildir"
    code, out, err = run(capsys, "restore", str(archive.path), "--at", "latest", "--into",
                         str(target), "--user", "bob@*")
    assert code == 0, err
    restored = MaildirStore(str(target))
    assert restored.users() == ["bob@example.org"]
    for info in store.folders("bob@example.org"):
        assert restored.message_names("bob@example.org", info.path) == store.message_names(
            "bob@example.org", info.path)
    code, out, err = run(capsys, "restore", str(archive.path), "--at", "2026-11-01",
                         "--beside", "--store", str(target), "--user", "bob@*")
    assert code == 0, err
    assert "restored 0 messages" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--at", "latest"], "--into STORE or --beside"),
    (["--at", "latest", "--into", "x", "--beside"], "--into STORE or --beside"),
    (["--at", "latest", "--beside", "--prefix", "A.B"], "cannot use 'A.B' as the restore folder"),
    (["--at", "latest", "--into", "x", "--store", "y"], "--store goes with --beside"),
    (["--at", "1999-01-01", "--beside", "--store", "STORE"], "No snapshot was taken at or before"),
    (["--at", "latest", "--beside", "--store", "STORE", "--user", "nobody"], "matches 'nobody'"),
])
def test_bad_restore_requests_are_refused_with_a_clear_message(
    archive: TestArchive, store: MaildirStore, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str,
) -> None:
    archive.backup(store, now_ms=day_ms("2026-11-01"))
    live = store.location.template
    args = [live if arg == "STORE" else arg for arg in args]
    code, _, err = run(capsys, "restore", str(archive.path), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_a_wrong_passphrase_is_refused_and_nothing_written(
    archive: TestArchive, store: MaildirStore, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive.backup(store, now_ms=day_ms("2026-11-01"))
    monkeypatch.setenv("BUNDLESYNC_PASSPHRASE", "wrong")
    code, _, err = run(capsys, "restore", str(archive.path), "--at", "latest", "--into",
                       str(tmp_path / "r" / "%d" / "%n" / "Maildir"))
    assert code not in (0, 1) and err.startswith("error: ")
    assert not (tmp_path / "r").exists()


def test_view_needs_an_archive_and_a_directory(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "view")
    assert code == 2 and "bundlesync view ARCHIVE --into DIR" in err


def test_view_prints_the_dovecot_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "view", "--dovecot-config", "--into", str(tmp_path))
    assert code == 0
    control = f"{tmp_path}/control/%u"
    assert (f"location = maildir:{tmp_path}/users/%u:LAYOUT=fs:CONTROL={control}"
            f":INDEX={control}\n") in out
    assert "prefix = Backups." in out and "Backups.* owner lr" in out
