"""Progress on a terminal for long steps, sizes in IEC units, completion scripts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bundlesync.cli.progress import Progress, human_bytes
from bundlesync.operations.demo import populate
from bundlesync.stores.maildir import MaildirStore

from .conftest import Net, Result


def _as_if_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # enabled=None means "if stderr is a terminal"; here it is one.
    monkeypatch.setattr("bundlesync.cli.output.Progress",
                        lambda label, enabled: Progress(label, enabled=enabled is None))


def test_init_shows_the_inventory_progress_on_a_terminal(
        tmp_path: Path, run: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    _as_if_on_a_terminal(monkeypatch)
    template = str(tmp_path / "mail" / "%d" / "%n" / "Maildir")
    (tmp_path / "mail").mkdir()
    populate(MaildirStore(template), per_folder=1)
    result = run("--home", str(tmp_path / "site"), "init", "--site", "s", "--store", template)
    assert result.code == 0
    assert "inventory:" in result.err and "user 1" in result.err


def test_quiet_and_json_never_draw_progress(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_if_on_a_terminal(monkeypatch)
    assert net.at("alpha", "export", str(net.drop), "-q").err == ""
    assert net.at("bravo", "import", str(net.drop), "--json").err == ""


def test_one_size_formatter_in_iec_units(net: Net) -> None:
    assert human_bytes(1024) == "1.0 KiB"
    exported = net.at("alpha", "export", str(net.drop))
    assert "KiB" in exported.out and " KB" not in exported.out
    inspected = net.at("alpha", "inspect", str(next(net.drop.glob("*.bsb"))))
    assert "KiB" in inspected.out


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(run: Callable[..., Result], shell: str) -> None:
    result = run("completion", shell)
    assert result.code == 0 and "_BUNDLESYNC_COMPLETE" in result.out
    as_json = run("completion", shell, "--json")
    assert "_BUNDLESYNC_COMPLETE" in as_json.json["result"]["script"]


def test_status_shows_its_scan_on_a_terminal(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_if_on_a_terminal(monkeypatch)
    result = net.at("alpha", "status")
    assert result.code == 0 and "status: scanning" in result.err


def test_the_export_says_what_the_bundle_holds_and_why(net: Net) -> None:
    result = net.at("alpha", "export", str(net.drop))
    # the first export after init: no new local change, yet the inventory goes
    assert "0 new local changes since the last run" in result.out
    assert "changes it has not acknowledged" in result.out
