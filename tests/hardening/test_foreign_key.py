"""Another site's key file copied into a home is noticed before anything is done."""

from __future__ import annotations

import shutil

import pytest

from bundlesync.cli import main
from bundlesync.errors import EXIT_LOCAL
from tests.operations.conftest import Sites


def test_another_sites_key_in_the_home_is_refused(sites: Sites,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")  # alpha has records of its own stream
    keys = sites.homes["alpha"] / "keys"
    for name in ("site.key", "site.bsc"):
        shutil.copy(sites.homes["bravo"] / "keys" / name, keys / name)
    before = sorted(p.name for p in sites.drop.iterdir())
    code = main(["--home", str(sites.homes["alpha"]), "export", str(sites.drop)])
    err = capsys.readouterr().err
    assert code == EXIT_LOCAL, err
    assert "belongs to site" in err and "own key" in err
    assert sorted(p.name for p in sites.drop.iterdir()) == before
