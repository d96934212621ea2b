"""After an import, the folders only bundlesync changed are not listed again -- and a
delivery racing the import is never missed for that.

The apply keeps a touched folder's new stamp only when a listing between two equal,
settled stamps matches the index (``scan.keep_applied_stamps``). Each race test
delivers a message the way a delivery agent does (``tmp/``, then a rename into
``new/``) at one moment of that check, through the failpoints module, and then shows
that the next scan records the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundlesync.operations import failpoints, scan
from bundlesync.operations.demo import demo_message
from bundlesync.operations.site import open_site, site_lock
from bundlesync.stores.base import INBOX
from bundlesync.stores.folder_files import marks, timestamp_step_ns
from bundlesync.stores.maildir import MaildirStore
from tests.operations.conftest import Sites


@pytest.fixture(autouse=True)
def _always_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """These stores are small: let every young stamp settle, as a large import does."""
    monkeypatch.setattr(scan, "SETTLE_MIN_FOLDERS", 1)


def _exchange(sites: Sites) -> str:
    sites.add("alpha", populate_per_folder=3)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    return sites.stores["alpha"].users()[0]


def _lda_delivery(sites: Sites, site: str, user: str, number: int) -> str:
    """Write a message into INBOX's new/ as a delivery agent would, behind our back."""
    root = Path(sites.stores[site].maildir_path(user))
    data, _when = demo_message(user, number)
    key = f"1800000000.M{number}P77.lda"
    tmp = root / "tmp" / key
    tmp.write_bytes(data)
    os.rename(tmp, root / "new" / key)
    return key


def test_the_scan_after_an_import_lists_no_folder(sites: Sites) -> None:
    """On this disk, for real: its sub-second mtimes let the stamps settle in 60 ms."""
    probe = sites.root / "probe"
    (probe / "cur").mkdir(parents=True)
    (probe / "cur" / "file").write_bytes(b"x")
    found = marks(str(probe))
    if found is None or timestamp_step_ns(found) is None:
        pytest.skip("the test directory's file system keeps whole-second mtimes")
    _exchange(sites)
    result = sites.import_("bravo")
    assert result.report.tallies  # the import did change bravo's folders
    after = sites.export("bravo")
    assert after.scan.folders > 0
    assert after.scan.folders_listed == 0
    assert after.scan.changes == 0


@pytest.mark.parametrize("point", ["stamps", "stamp-listed"])
def test_a_delivery_racing_the_stamp_check_is_found_by_the_next_scan(
        sites: Sites, point: str) -> None:
    user = _exchange(sites)
    delivered: list[str] = []

    def deliver() -> None:
        if not delivered:
            delivered.append(_lda_delivery(sites, "bravo", user, 777))

    with failpoints.acting_at(point, deliver):
        sites.import_("bravo")
    assert delivered
    after = sites.export("bravo")
    assert after.scan.added == 1
    assert after.scan.folders_listed >= 1
    keys = {m.key for m in sites.stores["bravo"].messages(user, INBOX)}
    assert delivered[0] in keys
    # ... and it travels: alpha receives it.
    sites.import_("alpha")
    assert delivered[0] in {m.key for m in sites.stores["alpha"].messages(user, INBOX)}


def test_a_delivery_after_the_stamp_was_kept_moves_it(sites: Sites) -> None:
    user = _exchange(sites)
    sites.import_("bravo")
    key = _lda_delivery(sites, "bravo", user, 778)
    after = sites.export("bravo")
    assert after.scan.added == 1
    assert after.scan.folders_listed == 1
    assert key in {m.key for m in sites.stores["bravo"].messages(user, INBOX)}


def test_a_young_stamp_on_a_coarse_file_system_is_left_to_the_next_scan(
        sites: Sites, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where mtimes are whole seconds, a stamp just after the apply stays racy for 2 s:
    it is not kept (the check does not wait that long), and the next scan lists."""
    _exchange(sites)
    # Every stamp the import reads is young on a coarse file system.
    monkeypatch.setattr(MaildirStore, "_is_racy", lambda _self, _marks: True)
    slept: list[float] = []
    monkeypatch.setattr("bundlesync.operations.scan.time.sleep", slept.append)
    sites.import_("bravo")
    assert slept  # it let the young stamps settle once ...
    monkeypatch.undo()
    after = sites.export("bravo")
    assert after.scan.folders_listed > 0  # ... and kept none of them
    assert after.scan.changes == 0


def test_a_small_import_does_not_wait_for_its_young_stamps(
        sites: Sites, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "SETTLE_MIN_FOLDERS", 1000)
    monkeypatch.setattr(scan, "SETTLE_MIN_FILES", 1000)
    slept: list[float] = []
    monkeypatch.setattr("bundlesync.operations.scan.time.sleep", slept.append)
    _exchange(sites)
    sites.import_("bravo")
    assert slept == []
    monkeypatch.undo()
    after = sites.export("bravo")
    assert after.scan.folders_listed > 0  # the young folders were left to this scan ...
    assert after.scan.changes == 0  # ... which finds nothing new in them


def test_an_apply_that_changes_no_folder_lists_none(sites: Sites) -> None:
    """An export applying what its own last scan recorded changes nothing in the
    store: a folder whose stamp another writer moved meanwhile is left to the scan,
    not listed a second time by the stamp check."""
    user = _exchange(sites)
    _lda_delivery(sites, "alpha", user, 779)
    sites.export("alpha")  # records the delivery; what it recorded is applied next run
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        try:
            assert site.index.has_pending()  # so the next export applies first
        finally:
            site.index.close()
    _lda_delivery(sites, "alpha", user, 780)
    listed: list[str] = []
    with failpoints.acting_at("stamp-listed", lambda: listed.append("listed")):
        after = sites.export("alpha")
    assert listed == []
    assert after.scan.added == 1  # the scan lists the folder and finds the delivery
