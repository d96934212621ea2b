"""status: current numbers, no false alarms, warnings that clear, --check for monitoring."""

from __future__ import annotations

import time

import pytest

from bundlesync.errors import StoreError
from bundlesync.stores.base import FolderPath
from bundlesync.stores.maildir import MaildirStore

from .conftest import ALICE, BOB, Net

DAY_MS = 86_400_000


def _add_mail(store: MaildirStore, user: str, n: int) -> None:
    store.add_message(user, ("INBOX",), key=f"17000{n:05d}.M1P1.new", data=b"Subject: x\r\n\r\n.",
                      flags=frozenset(), internal_date=1_700_000_000)


def test_status_sees_local_changes_made_since_the_last_run(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    before = net.at("alpha", "status", "--json").json["result"]
    _add_mail(net.mail("alpha"), ALICE, 1)
    after = net.at("alpha", "status", "--json").json["result"]
    assert after["scanned"] is True and after["local_changes"] == 1
    assert after["peers"][0]["pending_changes"] == before["peers"][0]["pending_changes"] + 1


def test_no_scan_says_how_old_the_numbers_are(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    result = net.at("alpha", "status", "--no-scan")
    assert "Not scanned: the numbers are as of" in result.out and "s ago" in result.out


@pytest.mark.parametrize("step", ["init", "export", "failed export", "import"])
def test_no_false_alarm_after_ordinary_runs(net: Net, step: str) -> None:
    if step in ("export", "import"):
        net.at("alpha", "export", str(net.drop), "-q")
    if step == "import":
        net.at("bravo", "import", str(net.drop), "-q")
    if step == "failed export":
        (net.root / "not-a-dir").write_text("x")
        assert net.at("alpha", "export", str(net.root / "not-a-dir")).code != 0
    for name in ("alpha", "bravo"):
        result = net.at(name, "status", "--check")
        assert result.code == 0, result.out
        assert "interrupted" not in net.at(name, "status").out


class _ReadOnlyFor(MaildirStore):
    broken = BOB

    def add_message(self, user: str, path: FolderPath, *, key: str, data: bytes,
                    flags: frozenset[str], internal_date: int,
                    source: str | None = None):  # type: ignore[no-untyped-def]
        if user == self.broken:
            raise StoreError(f"cannot write into the Maildir of {user}: read-only file system")
        return super().add_message(user, path, key=key, data=data, flags=flags,
                                   internal_date=internal_date, source=source)


def test_a_users_failure_is_reported_honestly_and_clears_when_fixed(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    monkeypatch.setattr("bundlesync.operations.site.open_store", _ReadOnlyFor)
    failed = net.at("bravo", "import", str(net.drop), "--json")
    assert failed.code == 5
    changes = failed.json["result"]["changes"]
    assert changes["failed_users"] == [BOB]
    # bob's messages were not added: the summary counts alice's only
    assert {m["user"] for m in changes["mailboxes"]} == {ALICE}
    assert failed.json["error"]["code"] == "partial_failure"
    check = net.at("bravo", "status", "--check")
    assert check.code == 1 and "not all in the store" in check.out
    monkeypatch.undo()
    assert net.at("bravo", "import", str(net.drop), "-q").code == 0
    assert net.at("bravo", "status", "--check").code == 0


def test_a_lost_bundle_healed_by_a_later_one_is_no_warning(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    for bundle in net.drop.glob("*.bsb"):
        bundle.unlink()  # the stick with bundle 1 was lost
    _add_mail(net.mail("alpha"), ALICE, 2)
    net.at("alpha", "export", str(net.drop), "-q")
    assert net.at("bravo", "import", str(net.drop), "-q").code == 0
    status = net.at("bravo", "status", "--json").json["result"]
    assert status["warnings"] == []
    assert any("never arrived" in n for n in status["notes"])
    assert net.at("bravo", "status", "--check").code == 0


@pytest.mark.parametrize(("days", "code", "state"), [(0, 0, "OK"), (20, 1, "WARNING"),
                                                      (40, 2, "CRITICAL")])
def test_check_follows_the_nagios_convention(net: Net, monkeypatch: pytest.MonkeyPatch,
                                             days: int, code: int, state: str) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    net.at("bravo", "import", str(net.drop), "-q")
    later = int(time.time() * 1000) + days * DAY_MS
    monkeypatch.setattr("bundlesync.cli.status_cmd.now_ms", lambda: later)
    result = net.at("bravo", "status", "--check")
    assert result.code == code
    assert result.out.startswith(f"BUNDLESYNC {state} - ")
    assert "| peers=1 " in result.out
    as_json = net.at("bravo", "status", "--check", "--json")
    assert as_json.json["result"]["check"] == {"state": state, "code": code}


def test_check_on_a_broken_site_is_critical(net: Net) -> None:
    (net.homes["alpha"] / "bundlesync.toml").write_text("not = [toml")
    result = net.at("alpha", "status", "--check")
    assert result.code == 2 and result.out.startswith("BUNDLESYNC CRITICAL - ")


def test_check_with_a_bad_command_line_is_unknown(net: Net) -> None:
    result = net.at("alpha", "status", "--check", "--no-such-option")
    assert result.code == 3
