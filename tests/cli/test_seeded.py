"""A site set up on a copy of its peer's store: the first exchange carries no body both hold."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from bundlesync.operations.demo import store_digest

from .conftest import ALICE, Result, make_net


def test_a_seeded_site_sends_its_inventory_first_and_no_shared_body_travels(
        tmp_path: Path, run: Callable[..., Result]) -> None:
    # shore's store; the ship's is a copy of it (as a disk image or rsync would make)
    net = make_net(tmp_path, run, ("shore", "ship"), per_folder=2, befriend=False)
    shutil.rmtree(net.homes["ship"])
    shutil.rmtree(tmp_path / "ship-mail")
    shutil.copytree(tmp_path / "shore-mail", tmp_path / "ship-mail")
    # mail that reached the ship after the copy was taken
    net.mail("ship").add_message(ALICE, ("INBOX",), key="1700000999.M9P9.ship",
                                 data=b"Subject: after the copy\r\n\r\nhello\r\n",
                                 flags=frozenset(), internal_date=1_700_000_999)
    assert net.at("ship", "init", "--site", "ship", "--store",
                  str(tmp_path / "ship-mail" / "%d" / "%n" / "Maildir"), "-q").code == 0
    net.at("ship", "key", "export", str(tmp_path / "ship.card"), "-q")
    net.at("ship", "peer", "add", "shore", str(tmp_path / "shore.card"), "--yes", "-q")
    net.at("shore", "peer", "add", "ship", str(tmp_path / "ship.card"), "--yes", "-q")

    def bodies_sent(name: str, *extra: str) -> int:
        result = net.at(name, "export", str(net.drop), "--json", *extra)
        assert result.code == 0, result.err
        return sum(b["bodies"] for b in result.json["result"]["bundles"])

    carried = bodies_sent("ship", "--no-bodies")  # the inventory travels first
    assert carried == 0
    first = net.at("shore", "import", str(net.drop), "--json").json["result"]
    # of the copied mail nothing is added twice; the one new message waits for its body
    # (counted as added once it is delivered: reports count only what was applied)
    assert first["changes"]["added"] == 0 and first["changes"]["mailbox_changes"] == []
    assert len(first["changes"]["missing_bodies"]) == 1
    assert [m.split()[-1] for m in first["changes"]["missing_bodies"]] == ["1700000999.M9P9.ship"]
    carried += bodies_sent("shore")  # acknowledges the ship's inventory; asks for its new mail
    assert net.at("ship", "import", str(net.drop), "-q").code == 0
    carried += bodies_sent("ship")  # the one body the shore asked for
    assert net.at("shore", "import", str(net.drop), "-q").code == 0
    assert carried == 1
    assert store_digest(net.mail("shore")) == store_digest(net.mail("ship"))
