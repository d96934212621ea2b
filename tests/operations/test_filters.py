"""Filters hold back, they never drop: an import-side exclude keeps the held-back
changes in the log, lifting it brings the store in line, and status says so."""

from __future__ import annotations

import pytest

from bundlesync.cli import main
from bundlesync.errors import EXIT_OK
from bundlesync.operations.demo import USERS
from bundlesync.operations.site import open_site, site_lock
from bundlesync.operations.status import site_status
from tests.operations.conftest import Sites, tick

ALICE = USERS[0]
SENT = ("Sent",)


def _exchange(sites: Sites, a: str, b: str, *, exclude: tuple[str, ...] = ()) -> None:
    sites.export(a)
    sites.import_(b, exclude=exclude) if exclude else sites.import_(b)
    sites.export(b)
    sites.import_(a)


def _sent(sites: Sites, name: str) -> set[str]:
    store = sites.stores[name]
    if SENT not in {f.path for f in store.folders(ALICE)}:
        return set()
    return {m.guid for m in store.messages(ALICE, SENT)}


def _status(sites: Sites, name: str) -> dict[str, list[str]]:
    with site_lock(sites.homes[name]):
        site = open_site(sites.homes[name])
        try:
            return site_status(site, now_ms=tick()).held_back
        finally:
            site.index.close()


def test_import_exclude_holds_back_and_lifting_it_brings_the_mail(
        sites: Sites, capsys: pytest.CaptureFixture[str]) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    wanted = _sent(sites, "alpha")
    assert wanted

    sites.export("alpha")
    sites.import_("bravo", exclude=("Sent*",))
    assert _sent(sites, "bravo") == set()  # held back: not in the store ...
    assert _status(sites, "bravo") == {u: ["Sent"] for u in USERS}  # ... status says so
    capsys.readouterr()
    assert main(["--home", str(sites.homes["bravo"]), "status"]) == EXIT_OK
    assert f"{ALICE}: Sent held back by a filter" in capsys.readouterr().out
    sites.export("bravo")
    sites.import_("alpha")

    for _ in range(2):  # the filter is lifted: ordinary rounds bring Sent
        _exchange(sites, "alpha", "bravo")
    assert _sent(sites, "bravo") == wanted
    assert _status(sites, "bravo") == {}
    assert sites.digest("alpha") == sites.digest("bravo")


def test_a_held_back_folder_on_disk_is_not_emptied(sites: Sites) -> None:
    """Sent exists at both sites; alpha adds to it while bravo imports with Sent
    excluded: bravo's Sent is left as it was (nothing expunged), then caught up."""
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    _exchange(sites, "alpha", "bravo")
    before = _sent(sites, "bravo")
    assert before
    sites.deliver("alpha", ALICE, SENT, 7001)
    sites.export("alpha")
    sites.import_("bravo", exclude=("Sent",))
    assert _sent(sites, "bravo") == before
    _exchange(sites, "bravo", "alpha")
    _exchange(sites, "alpha", "bravo")
    assert _sent(sites, "bravo") == _sent(sites, "alpha")
    assert sites.digest("alpha") == sites.digest("bravo")
