"""kill -9 at every step of an import, then run again: the result of one clean run.

The crash points (``bundlesync.operations.failpoints``) end the process with
``os._exit`` -- no cleanup, no rollback, no flush -- exactly where a kill -9 or a
power cut would: after a store action but before the index recorded it, after a
folder action, before a bundle's ingest commits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundlesync.operations.failpoints import CRASH_EXIT
from tests.operations.conftest import Sites

pytestmark = pytest.mark.slow


def bundlesync(home: Path, *args: str,
               crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("BUNDLESYNC_CRASH_AT", None)
    if crash is not None:
        env["BUNDLESYNC_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "bundlesync", "--home", str(home), *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def prepared(sites: Sites) -> Sites:
    alpha = sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    inbox = ("INBOX",)
    user = alpha.users()[0]
    # A second bundle with flag changes, an expunge and a rename, so that every kind
    # of store action is on the way.
    sites.import_("bravo")
    first = alpha.messages(user, inbox)
    alpha.set_flags(user, inbox, first[0].key, first[0].flags | {"\\Flagged"})
    alpha.expunge(user, inbox, first[1].key)
    alpha.rename_folder(user, ("Archive",), ("Old",))
    sites.export("alpha")
    return sites


def snapshot(sites: Sites, name: str, where: Path) -> None:
    shutil.copytree(sites.root / name, where / name, symlinks=True)


def restore(sites: Sites, name: str, where: Path) -> None:
    shutil.rmtree(sites.root / name)
    shutil.copytree(where / name, sites.root / name, symlinks=True)


@pytest.mark.parametrize("point", ["apply", "folder", "ingest", "batch"])
def test_kill_at_every_step_then_rerun_converges(
        prepared: Sites, tmp_path_factory: pytest.TempPathFactory, point: str) -> None:
    _crash_at_every_step(prepared, tmp_path_factory, point)


@pytest.mark.parametrize("point", ["written", "deliver", "batch"])
def test_kill_while_a_first_transfer_is_delivered_then_rerun_converges(
        sites: Sites, tmp_path_factory: pytest.TempPathFactory, point: str) -> None:
    # Every message is new here: delivered in batches (each spool file linked into
    # tmp/, or written there), synced once, then named one by one -- a kill anywhere
    # in between, and before the index records the batch. "written": the batch's
    # spool files are linked into tmp/ (with the owner and date changed), nothing
    # is named yet; the next run removes those tmp/ names and links them again.
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    # Every fifth message is enough to land before, inside and after each batch.
    _crash_at_every_step(sites, tmp_path_factory, point, stride=5 if point == "deliver" else 1)


@pytest.mark.parametrize("point", ["apply", "batch"])
def test_kill_while_small_changes_of_two_users_are_applied_together_then_rerun_converges(
        sites: Sites, tmp_path_factory: pytest.TempPathFactory, point: str) -> None:
    # Both users' placements share one store batch and one commit, then both users'
    # removals: a kill anywhere in either pass.
    alpha = sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    inbox = ("INBOX",)
    for number, user in enumerate(alpha.users()):
        first, second = alpha.messages(user, inbox)[:2]
        alpha.set_flags(user, inbox, first.key, first.flags | {"\\Answered"})
        alpha.expunge(user, inbox, second.key)
        sites.deliver("alpha", user, ("Sent",), 800 + number)
    sites.export("alpha")
    _crash_at_every_step(sites, tmp_path_factory, point)


def _crash_at_every_step(sites: Sites, tmp_path_factory: pytest.TempPathFactory,
                         point: str, *, stride: int = 1) -> None:
    saved = tmp_path_factory.mktemp("saved")
    snapshot(sites, "bravo", saved)
    clean = bundlesync(sites.homes["bravo"], "import", str(sites.drop))
    assert clean.returncode == 0, clean.stderr
    expected = sites.digest("bravo")
    assert expected == sites.digest("alpha")
    crashes = 0
    for step in range(1, 200, stride):
        restore(sites, "bravo", saved)
        crashed = bundlesync(sites.homes["bravo"], "import", str(sites.drop),
                             crash=f"{point}:{step}")
        if crashed.returncode == 0:
            break  # fewer steps than this: every step has been crashed at
        assert crashed.returncode == CRASH_EXIT, crashed.stderr
        crashes += 1
        again = bundlesync(sites.homes["bravo"], "import", str(sites.drop))
        assert again.returncode == 0, again.stderr
        assert sites.digest("bravo") == expected, f"after a crash at {point} step {step}"
        assert _no_shared_files(sites.root / "bravo" / "mail"), f"{point} step {step}"
        once_more = bundlesync(sites.homes["bravo"], "import", str(sites.drop))
        assert "already applied" in once_more.stdout
        assert sites.digest("bravo") == expected
    assert crashes > 0


def _no_shared_files(mail: Path) -> bool:
    """Whether every message file is a file of its own (a spool file linked into
    two messages would make one inode two messages)."""
    inodes = [os.lstat(os.path.join(directory, name)).st_ino
              for directory, _dirs, names in os.walk(mail)
              if os.path.basename(directory) in ("cur", "new") for name in names]
    return len(set(inodes)) == len(inodes)
