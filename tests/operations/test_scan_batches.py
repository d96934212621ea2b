"""A scan records a folder's new files a batch at a time: the same changes as at once.

``scan.ADD_BATCH`` is set to a few files here so that every kind of change (adds,
moves whose body is not read again, flag changes, expunges) crosses batch bounds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundlesync.operations import scan
from bundlesync.operations.demo import USERS
from bundlesync.stores.base import INBOX
from tests.operations.conftest import Sites

ALICE = USERS[0]


@pytest.mark.parametrize("batch", [1, 3])
def test_changes_recorded_in_batches_reach_the_other_site(
        sites: Sites, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    monkeypatch.setattr(scan, "ADD_BATCH", batch)
    alpha = sites.add("alpha", populate_per_folder=4)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    assert sites.digest("bravo") == sites.digest("alpha")
    for number in range(7):
        sites.deliver("alpha", ALICE, INBOX, 900 + number)
    # Two files of another folder moved into INBOX behind our back: adds whose bodies
    # are known, and expunges, on either side of batch bounds.
    source = Path(alpha.maildir_path(ALICE)) / ".Sent" / "cur"
    inbox = Path(alpha.maildir_path(ALICE)) / "cur"
    moved = sorted(os.listdir(source))[:2]
    for name in moved:
        os.rename(source / name, inbox / name)
    first = alpha.messages(ALICE, INBOX)[0]
    alpha.set_flags(ALICE, INBOX, first.key, first.flags ^ {"\\Answered"})
    result = sites.export("alpha")
    stats = result.scan
    assert (stats.added, stats.expunged, stats.flag_changes) == (9, 2, 1)
    # The moved files' bodies are known: only the delivered ones are read.
    delivered = [m for m in alpha.messages(ALICE, INBOX) if m.key.endswith(".alpha")]
    assert stats.bytes_hashed == sum(m.size for m in delivered)
    sites.import_("bravo")
    assert sites.digest("bravo") == sites.digest("alpha")
