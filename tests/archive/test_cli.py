"""The archive commands as a person meets them: exit codes, messages, JSON."""

from __future__ import annotations

import json
import os
import socket

from bundlesync.operations.demo import populate
from tests.archive.conftest import PASSPHRASE, CliBackups
from tests.archive.views import snapshot_view, store_view


def test_backup_snapshots_check_and_forget_from_the_command_line(cli: CliBackups) -> None:
    populate(cli.store, per_folder=3)
    first = cli.backup("--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)["result"]
    assert summary["users"] == 2 and summary["messages"] == 30
    assert cli.backup().returncode == 0
    # No site at all: the passphrase alone lists, checks and forgets.
    listing = cli.run("snapshots", str(cli.archive), "--json", home=False)
    assert listing.returncode == 0, listing.stderr
    snaps = json.loads(listing.stdout)["result"]["snapshots"]
    assert len(snaps) == 2 and snaps[0]["messages"] == 30
    checked = cli.run("check", str(cli.archive), "--read-data", home=False)
    assert checked.returncode == 0 and "no problems found" in checked.stdout
    dry = cli.run("forget", str(cli.archive), "--keep-last", "1", "--dry-run", "--json",
                  home=False)
    assert json.loads(dry.stdout)["result"]["removed"] == []
    no_key = cli.run("forget", str(cli.archive), "--keep-last", "1", "--prune", home=False)
    assert no_key.returncode == 4 and "needs the key of site alpha" in no_key.stderr
    done = cli.run("forget", str(cli.archive), "--keep-last", "1", home=False)
    assert done.returncode == 0, done.stderr
    assert cli.run("prune", str(cli.archive)).returncode == 0
    reader = cli.reader()
    [kept] = reader.snapshots()
    assert kept.id == snaps[1]["id"]
    assert snapshot_view(reader, kept.id) == store_view(cli.store)


def test_snapshots_say_which_rule_keeps_each(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    cli.backup()
    out = cli.run("snapshots", str(cli.archive), "--keep-daily", "7", home=False)
    assert out.returncode == 0 and "daily snapshot" in out.stdout


def test_a_new_archive_needs_a_recovery_key(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    refused = cli.run("backup", str(cli.archive), passphrase=None)
    assert refused.returncode == 4
    assert "readable only with this site's key" in refused.stderr
    assert "--no-recovery-key" in refused.stderr
    assert not cli.archive.exists()
    allowed = cli.run("backup", str(cli.archive), "--no-recovery-key", passphrase=None)
    assert allowed.returncode == 0, allowed.stderr


def test_a_recovery_key_card_opens_the_archive_on_a_bare_machine(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    card = cli.root / "card.txt"
    made = cli.run("backup", str(cli.archive), "--recovery-key-card", str(card),
                   passphrase=None)
    assert made.returncode == 0, made.stderr
    assert oct(card.stat().st_mode & 0o777) == "0o600"
    out = cli.run("snapshots", str(cli.archive), "--recovery-key-file", str(card),
                  passphrase=None, home=False)
    assert out.returncode == 0 and "1 snapshot(s)" in out.stdout
    no_secret = cli.run("snapshots", str(cli.archive), passphrase=None, home=False)
    assert no_secret.returncode == 4 and "No secret was given" in no_secret.stderr


def test_wrong_passphrase_and_not_an_archive(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    cli.backup()
    wrong = cli.run("check", str(cli.archive), passphrase="nope", home=False)
    assert wrong.returncode == 4 and "does not open this archive" in wrong.stderr
    missing = cli.run("snapshots", str(cli.root / "nothing"), home=False)
    assert missing.returncode == 4 and "holds no bundlesync archive" in missing.stderr


def test_a_user_that_fails_is_reported_and_the_others_are_backed_up(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    out = cli.backup("-u", "alice@example.org", "-u", "ghost@example.org")
    assert out.returncode == 5
    assert "ghost@example.org: the store has no such user" in out.stderr
    reader = cli.reader()
    assert reader.users(reader.snapshots()[-1].id) == ["alice@example.org"]


def test_a_live_lock_refuses_and_a_dead_one_is_broken(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    cli.backup()
    lock = cli.archive / "lock"
    lock.write_text(f"pid={os.getpid()} host={socket.gethostname()} op=backup time=0\n")
    held = cli.backup()
    assert held.returncode == 75 and f"locked by process {os.getpid()}" in held.stderr
    lock.write_text(f"pid=999999999 host={socket.gethostname()} op=backup time=0\n")
    assert cli.backup().returncode == 0
    assert not lock.exists()


def test_usage_errors(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    cli.backup()
    empty = cli.run("forget", str(cli.archive))
    assert empty.returncode == 2 and "No retention rule" in empty.stderr
    bad = cli.run("forget", str(cli.archive), "--keep-within", "3 weeks")
    assert bad.returncode == 2 and "is not a duration" in bad.stderr
    subset = cli.run("check", str(cli.archive), "--read-data-subset", "150%")
    assert subset.returncode == 2


def test_check_names_the_damage_and_exits_7(cli: CliBackups) -> None:
    populate(cli.store, per_folder=2)
    cli.backup()
    pack = max((cli.archive / "data").glob("*/*"), key=lambda p: p.stat().st_size)  # bodies
    data = bytearray(pack.read_bytes())
    data[20] ^= 0xFF
    pack.write_bytes(bytes(data))
    deep = cli.run("check", str(cli.archive), "--read-data")
    assert deep.returncode == 7
    assert "affects snapshot" in deep.stderr and "mailbox" in deep.stderr


def test_passphrase_file(cli: CliBackups) -> None:
    populate(cli.store, per_folder=1)
    cli.backup()
    secret = cli.root / "pass"
    secret.write_text(PASSPHRASE + "\n")
    out = cli.run("snapshots", str(cli.archive), "--passphrase-file", str(secret),
                  passphrase=None, home=False)
    assert out.returncode == 0, out.stderr
