"""A ``status`` that scans every user and mailbox records a whole scan in
``last-scan`` (operations.freshness), so the next no-change export takes the quick
path; a masked status records a partial scan, which the quick path does not trust."""

from __future__ import annotations

import time

import pytest

from bundlesync.operations import quick
from bundlesync.operations.freshness import last_scan, last_whole_scan
from tests.cli.conftest import ALICE, Net, exchange_everything

# Past the stamps' racy window (50 ms on a file system with fine timestamps).
SETTLE_S = 0.12


def _exchanged_and_settled(net: Net) -> None:
    """alpha and bravo have exchanged everything; only alpha's own bundles are left,
    as after bravo's site erased what it imported."""
    exchange_everything(net)
    # The drop's README.txt then lists only what is there.
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    time.sleep(SETTLE_S)


def _quick_export(net: Net, capsys: pytest.CaptureFixture[str]) -> list[str] | None:
    """None if the quick path ran the export; else why it gave up."""
    time.sleep(SETTLE_S)
    why: list[str] = []
    code = quick.run(["--home", str(net.homes["alpha"]), "export", str(net.drop), "-q"],
                     why=why)
    capsys.readouterr()
    return None if code == 0 else why


def test_after_a_whole_status_a_no_change_export_takes_the_quick_path(
        net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    _exchanged_and_settled(net)
    before = last_scan(net.homes["alpha"])
    status = net.at("alpha", "status", "-q")
    assert status.code == 0, status.err
    home = net.homes["alpha"]
    assert last_whole_scan(home) is not None
    assert last_whole_scan(home) != before  # recorded by status itself
    assert _quick_export(net, capsys) is None


def test_a_masked_status_records_a_partial_scan(
        net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    _exchanged_and_settled(net)
    status = net.at("alpha", "status", "-q", "-u", ALICE)
    assert status.code == 0, status.err
    assert last_scan(net.homes["alpha"]) is not None
    assert last_whole_scan(net.homes["alpha"]) is None
    why = _quick_export(net, capsys)
    assert why is not None
    assert "no whole scan" in why[0], why
