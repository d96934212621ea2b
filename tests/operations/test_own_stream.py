"""A site is the only authority on its own stream; a fork keeps both sides.

Each test here is a failure found by trying the shipped operations as a new user
(restoring a site from an old copy) and as an attacker (a trusted peer sending
changes under the receiver's own ids) would: real Maildirs, real state index,
real bundles.
"""

from __future__ import annotations

import hashlib
import shutil

from bundlesync.core.model import (
    Body,
    Change,
    Dot,
    MailboxRef,
    MessageAdded,
    MessageRef,
    Record,
    SubscriptionSet,
    VersionVector,
)
from bundlesync.core.state import inventory_timestamp
from bundlesync.format import BundleId, write_bundle
from bundlesync.keys import TrustStore, load_identity, site_paths
from bundlesync.operations.demo import USERS, demo_message
from bundlesync.operations.site import open_site, site_lock
from bundlesync.state.codec import decode_change
from tests.operations.conftest import Sites, tick

ALICE = USERS[0]
INBOX = ("INBOX",)


def _exchange(sites: Sites, a: str, b: str, rounds: int = 1) -> None:
    for _ in range(rounds):
        sites.export(a)
        sites.import_(b)
        sites.export(b)
        sites.import_(a)


def _keys(sites: Sites, name: str) -> set[str]:
    return {m.key for m in sites.stores[name].messages(ALICE, INBOX)}


def _has(keys: set[str], number: int, origin: str) -> bool:
    return any(k.endswith(f"M{number}P9.{origin}") for k in keys)


def _stream(sites: Sites, name: str) -> tuple[str, int, int]:
    """(site id, incarnation, last counter) of a site's own stream."""
    with site_lock(sites.homes[name]):
        site = open_site(sites.homes[name])
        try:
            return site.site_id, site.stream.incarnation, site.index.stream_max(site.stream)
        finally:
            site.index.close()


def _forge(sites: Sites, sender: str, receiver: str, records: list[Record], *,
           seq: int = 9_999) -> None:
    """A bundle really signed by ``sender``'s key, with whatever records it likes."""
    paths = site_paths(sites.homes[sender])
    identity = load_identity(paths.keys)
    card = TrustStore(paths.peers).by_name(receiver)
    assert card is not None
    write_bundle(sites.drop, identity=identity,
                 bundle_id=BundleId(identity.site_id, 1, seq), kind="sync", recipients=[card],
                 ack=VersionVector(), assumes=VersionVector(), records=records,
                 created_ms=tick())


def _fresh_drive(sites: Sites) -> None:
    """The restored site meets its peer through a new, empty drop: no old bundle
    of either side is lying there to give the restore away."""
    shutil.rmtree(sites.drop)
    sites.drop.mkdir()


def _two_sites(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    _exchange(sites, "alpha", "bravo")


def test_restored_home_and_store_reusing_counters_loses_no_mail(sites: Sites) -> None:
    """Bravo is restored from an old copy of its home AND store, then receives mail
    before it hears from alpha: it reuses change numbers alpha already holds.
    The reused dots reach alpha as forks; both sides are kept, and the mail bravo
    received after the restore reaches alpha."""
    _two_sites(sites)
    backup = sites.root / "bravo-backup"
    shutil.copytree(sites.root / "bravo", backup, symlinks=True)
    sites.deliver("bravo", ALICE, INBOX, 5001)
    _exchange(sites, "bravo", "alpha")
    assert _has(_keys(sites, "alpha"), 5001, "bravo")

    shutil.rmtree(sites.root / "bravo")
    shutil.copytree(backup, sites.root / "bravo", symlinks=True)
    _fresh_drive(sites)
    sites.deliver("bravo", ALICE, INBOX, 5002)
    _exchange(sites, "bravo", "alpha", rounds=4)

    assert _has(_keys(sites, "alpha"), 5002, "bravo")  # the mail after the restore
    assert _has(_keys(sites, "bravo"), 5001, "bravo")  # the mail the restore forgot
    assert sites.digest("alpha") == sites.digest("bravo")


def test_restored_home_alone_is_detected_and_converges(sites: Sites) -> None:
    """Only bravo's home is restored (its store is current), and alpha has nothing
    new to say: bravo's reused bundle numbers and change numbers still reach alpha."""
    _two_sites(sites)
    backup = sites.root / "bravo-home-backup"
    shutil.copytree(sites.homes["bravo"], backup)
    for number in range(5101, 5105):  # bundle numbers the restored copy will reuse
        sites.deliver("bravo", ALICE, INBOX, number)
        _exchange(sites, "bravo", "alpha")

    shutil.rmtree(sites.homes["bravo"])
    shutil.copytree(backup, sites.homes["bravo"])
    _fresh_drive(sites)
    sites.deliver("bravo", ALICE, INBOX, 5110)
    _exchange(sites, "bravo", "alpha", rounds=3)

    keys = _keys(sites, "alpha")
    assert _has(keys, 5104, "bravo") and _has(keys, 5110, "bravo")
    assert sites.digest("alpha") == sites.digest("bravo")


def test_changes_under_the_receivers_own_ids_cannot_silence_it(sites: Sites) -> None:
    """A trusted peer sends 200 subscription changes at alpha's own counters 1..200.
    They are not taken as alpha's changes: alpha moves to a new incarnation, and
    the changes it makes afterwards still reach bravo."""
    _two_sites(sites)
    alpha_id, incarnation, _ = _stream(sites, "alpha")
    ghost = MailboxRef(ALICE, "f" * 32)
    forged: list[Record] = [
        Change(Dot(alpha_id, incarnation, n), inventory_timestamp(alpha_id),
               SubscriptionSet(ghost, n % 2 == 0))
        for n in range(1, 201)
    ]
    _forge(sites, "bravo", "alpha", forged)
    result = sites.import_("alpha")
    assert result.new_incarnation is not None
    _, now, _ = _stream(sites, "alpha")
    assert now > incarnation

    sites.deliver("alpha", ALICE, INBOX, 5201)
    _exchange(sites, "alpha", "bravo", rounds=2)
    assert _has(_keys(sites, "bravo"), 5201, "alpha")
    assert sites.digest("alpha") == sites.digest("bravo")


def test_a_known_dot_with_other_content_is_a_fork_and_both_are_kept(sites: Sites) -> None:
    """Bravo's dot that alpha already holds arrives again carrying another message:
    alpha keeps both messages and re-issues the fork under its own stream, so a
    third site that heard only one side gets the other too."""
    _two_sites(sites)
    sites.add("charlie")
    sites.befriend("alpha", "charlie")
    sites.deliver("bravo", ALICE, INBOX, 5301)
    _exchange(sites, "bravo", "alpha")
    bravo_id, incarnation, last = _stream(sites, "bravo")
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        try:
            held = [decode_change(logged.record) for logged
                    in site.index.changes_not_covered(VersionVector())
                    if logged.dot == Dot(bravo_id, incarnation, last)]
        finally:
            site.index.close()
    assert len(held) == 1 and isinstance(held[0].op, MessageAdded)
    original = held[0].op
    data, when = demo_message(ALICE, 5302)
    sha = hashlib.sha256(data).hexdigest()
    other = MessageAdded(MessageRef(original.message.mailbox, "forked-5302", sha), when,
                         len(data), frozenset())
    _forge(sites, "bravo", "alpha",
           [Change(Dot(bravo_id, incarnation, last), held[0].ts, other), Body(sha, data)])
    sites.import_("alpha")
    guids = {m.guid for m in sites.stores["alpha"].messages(ALICE, INBOX)}
    assert "forked-5302" in guids
    assert original.message.guid in guids

    _exchange(sites, "alpha", "charlie")
    charlie = {m.guid for m in sites.stores["charlie"].messages(ALICE, INBOX)}
    assert {"forked-5302", original.message.guid} <= charlie


def test_restored_home_and_store_is_noticed_from_our_own_bundles_in_the_drop(
        sites: Sites) -> None:
    """Home and store restored together agree with each other (the mark came back
    with the index); the bundle bravo wrote before the restore, still in the drop,
    gives it away before bravo records or exports anything."""
    _two_sites(sites)
    backup = sites.root / "bravo-backup"
    shutil.copytree(sites.root / "bravo", backup, symlinks=True)
    sites.deliver("bravo", ALICE, INBOX, 5401)
    _exchange(sites, "bravo", "alpha")
    _, before, _ = _stream(sites, "bravo")

    shutil.rmtree(sites.root / "bravo")
    shutil.copytree(backup, sites.root / "bravo", symlinks=True)
    sites.deliver("bravo", ALICE, INBOX, 5402)
    sites.export("bravo")
    _, after, _ = _stream(sites, "bravo")
    assert after > before
    _exchange(sites, "alpha", "bravo", rounds=2)
    assert _has(_keys(sites, "alpha"), 5402, "bravo")
    assert _has(_keys(sites, "bravo"), 5401, "bravo")
    assert sites.digest("alpha") == sites.digest("bravo")


def test_our_own_bundle_renamed_in_the_drop_still_shows_a_restore(sites: Sites) -> None:
    """The same, with the tell-tale bundle copied to the stick under another name:
    restore detection passes over only names the state recorded writing or a
    peer's bundle names; any other file is read, and this one is evidence."""
    _two_sites(sites)
    backup = sites.root / "bravo-backup"
    shutil.copytree(sites.root / "bravo", backup, symlinks=True)
    sites.deliver("bravo", ALICE, INBOX, 5501)
    sites.export("bravo")
    for path in sites.drop.glob("bravo_*.bsb"):
        path.rename(sites.drop / f"copy of {path.name}")
    _, before, _ = _stream(sites, "bravo")

    shutil.rmtree(sites.root / "bravo")
    shutil.copytree(backup, sites.root / "bravo", symlinks=True)
    sites.export("bravo")
    _, after, _ = _stream(sites, "bravo")
    assert after > before  # a new incarnation before anything was exported


def test_a_dot_out_of_range_rejects_the_bundle_and_changes_nothing(sites: Sites) -> None:
    """A forged incarnation of the receiver near the top of the integers would leave
    it no incarnation to move to (and does not fit the index): the bundle is refused."""
    _two_sites(sites)
    alpha_id, incarnation, _ = _stream(sites, "alpha")
    ghost = MailboxRef(ALICE, "e" * 32)
    _forge(sites, "bravo", "alpha", [
        Change(Dot(alpha_id, 2**63, 1), inventory_timestamp(alpha_id),
               SubscriptionSet(ghost, True))])
    result = sites.import_("alpha")
    assert [b.status for b in result.bundles if b.seq == 9_999] == ["rejected"]
    assert result.new_incarnation is None
    assert _stream(sites, "alpha")[1] == incarnation
