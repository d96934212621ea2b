"""A replayed, superseded bundle never rolls a peer's state back (bundle-v2 §2.4).

Its changes still merge (the merge is idempotent), but the acknowledgement and
the wants it carries are older than what the peer said since: they are kept
only from the newest bundle of each origin, by (incarnation, sequence).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bundlesync.core.model import VersionVector
from bundlesync.format import find_bundles
from bundlesync.operations.demo import USERS
from bundlesync.operations.site import open_site, site_lock
from tests.operations.conftest import Sites


def _peer_ack(sites: Sites, name: str, peer: str) -> VersionVector:
    with site_lock(sites.homes[name]):
        site = open_site(sites.homes[name])
        try:
            card = site.trust.by_name(peer)
            assert card is not None
            row = site.index.peer(card.site_id)
            return VersionVector() if row is None else row.ack
        finally:
            site.index.close()


def _site_id(sites: Sites, name: str) -> str:
    with site_lock(sites.homes[name]):
        site = open_site(sites.homes[name])
        site.index.close()
        return site.site_id


def test_a_replayed_older_bundle_does_not_replace_the_acknowledgement(tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    # Bundle 1 is lost on the way (it stays on an old stick) ...
    old = tmp_path / "old-drop"
    old.mkdir()
    for path in find_bundles(sites.drop):
        shutil.move(path, old / path.name)
    sites.deliver("bravo", USERS[0], ("INBOX",), 77)
    sites.export("bravo")
    sites.import_("alpha")
    sites.export("alpha")  # ... bundle 2 acknowledges bravo's changes
    sites.import_("bravo")
    newest = _peer_ack(sites, "bravo", "alpha")
    bravo_streams = [s for s in newest if s.site != _site_id(sites, "alpha")]
    assert bravo_streams  # alpha acknowledged something of bravo's
    result = sites.import_("bravo", old)  # bundle 1 turns up after bundle 2
    assert [b.status for b in result.bundles] == ["applied"]  # its changes may merge
    assert _peer_ack(sites, "bravo", "alpha") == newest  # its older word does not count
