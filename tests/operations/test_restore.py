"""A site whose home is restored from an old copy never reuses a change number."""

from __future__ import annotations

import shutil

from bundlesync.core.model import FLAGGED
from bundlesync.operations.demo import USERS
from tests.operations.conftest import Sites

ALICE = USERS[0]


def test_restored_site_moves_to_a_new_incarnation_and_converges(sites: Sites) -> None:
    alpha = sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    backup = sites.root / "alpha-home-backup"
    shutil.copytree(sites.homes["alpha"], backup)

    # alpha goes on working and its changes reach bravo ...
    inbox = ("INBOX",)
    first = alpha.messages(ALICE, inbox)[0]
    alpha.set_flags(ALICE, inbox, first.key, first.flags | {FLAGGED})
    sites.deliver("alpha", ALICE, inbox, 4242)
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")

    # ... then alpha's home is restored from the old copy, and more mail arrives.
    shutil.rmtree(sites.homes["alpha"])
    shutil.copytree(backup, sites.homes["alpha"])
    sites.deliver("alpha", ALICE, inbox, 4343)
    result = sites.import_("alpha")
    assert result.new_incarnation is not None
    assert result.new_incarnation > 1  # above every incarnation seen, at least the time
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    assert sites.digest("alpha") == sites.digest("bravo")
    keys = {m.key for m in sites.stores["bravo"].messages(ALICE, inbox)}
    assert any(k.endswith("M4343P9.alpha") for k in keys)  # the new mail was not lost
    assert any(k.endswith("M4242P9.alpha") for k in keys)


def test_site_restored_with_its_mark_kept_writes_to_its_peers_and_takes_back_its_mail(
        sites: Sites) -> None:
    # Home and store restored from one old copy, the high-water mark kept out of
    # the backup, and nothing new anywhere: the site sees the restore at its next
    # run, and must tell its peers (a bundle with nothing new) so that they send
    # back the mail it delivered after the copy was taken.
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    backup = sites.root / "alpha-backup"
    shutil.copytree(sites.root / "alpha", backup, symlinks=True)

    inbox = ("INBOX",)
    later = sites.deliver("alpha", ALICE, inbox, 4242)
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")

    mark = (sites.homes["alpha"] / "spent.json").read_bytes()
    shutil.rmtree(sites.root / "alpha")
    shutil.copytree(backup, sites.root / "alpha", symlinks=True)
    (sites.homes["alpha"] / "spent.json").write_bytes(mark)
    assert later not in {m.key for m in sites.stores["alpha"].messages(ALICE, inbox)}

    out, back = sites.root / "out", sites.root / "back"
    out.mkdir()
    back.mkdir()
    assert sites.export("alpha", out).bundles  # a new incarnation: bravo must hear of it
    sites.import_("bravo", out)
    sites.export("bravo", back)
    sites.import_("alpha", back)
    assert later in {m.key for m in sites.stores["alpha"].messages(ALICE, inbox)}
    assert sites.digest("alpha") == sites.digest("bravo")
