"""The change log keeps each change as the bundle carried it.

The reader accepts one encoding per record only (bundle-v1 §6.3), so the import
logs the received bytes instead of encoding each change again: they must be the
bytes the change encodes to, for every kind of change, and a record in another
encoding of the same values must still be refused, with nothing changed.
"""

from __future__ import annotations

import hashlib

from bundlesync.core.model import (
    Body,
    Change,
    Dot,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRef,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Stream,
    SubscriptionSet,
    Timestamp,
    VersionVector,
)
from bundlesync.format import BundleId, EncodedChange, write_bundle
from bundlesync.format.records import record_kind
from bundlesync.keys import TrustStore, load_identity, site_paths
from bundlesync.operations.demo import USERS, demo_message
from bundlesync.operations.site import open_site, site_lock
from bundlesync.state.codec import decode_change, encode_change
from tests.operations.conftest import Sites, tick

ALICE = USERS[0]


def _changes_of_every_kind(site: str) -> tuple[list[Change], Body]:
    """A folder made, subscribed, renamed, a message in it added, flagged and
    expunged, a second folder made and deleted: every operation of §6.3."""
    folder = MailboxRef(ALICE, "1a" * 16)
    other = MailboxRef(ALICE, "2b" * 16)
    data, when = demo_message(ALICE, 7001)
    sha = hashlib.sha256(data).hexdigest()
    message = MessageRef(folder, "received-7001", sha)
    ops = [
        MailboxCreated(folder, None, "Projects", 1_700_000_001, None),
        SubscriptionSet(folder, True),
        MailboxRenamed(folder, None, "Projekte"),
        MessageAdded(message, len(data), when, frozenset({"\\Seen", "$Label1"})),
        FlagsChanged(message, frozenset({"\\Flagged"}), frozenset({"\\Seen"})),
        MessageExpunged(message),
        MailboxCreated(other, None, "Archive", 1_700_000_002, "\\Archive"),
        MailboxDeleted(other),
    ]
    start = tick()
    changes = [Change(Dot(site, 1, 100 + n), Timestamp(start + n, 0, site), op)
               for n, op in enumerate(ops)]
    return changes, Body(sha, data)


def _send(sites: Sites, sender: str, receiver: str, records: list[object], *,
          seq: int) -> None:
    """A bundle really signed by ``sender``, holding ``records`` as given."""
    paths = site_paths(sites.homes[sender])
    identity = load_identity(paths.keys)
    card = TrustStore(paths.peers).by_name(receiver)
    assert card is not None
    write_bundle(sites.drop, identity=identity, bundle_id=BundleId(identity.site_id, 1, seq),
                 kind="sync", recipients=[card], ack=VersionVector(), assumes=VersionVector(),
                 records=records, created_ms=tick())  # type: ignore[arg-type]


def _logged(sites: Sites, name: str, stream: Stream) -> dict[int, bytes]:
    with site_lock(sites.homes[name]):
        site = open_site(sites.homes[name])
        try:
            return {c.dot.counter: c.record for c in site.index.changes_not_covered(
                VersionVector()) if c.dot.stream == stream}
        finally:
            site.index.close()


def _pair(sites: Sites) -> str:
    sites.add("alpha")
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    with site_lock(sites.homes["bravo"]):
        site = open_site(sites.homes["bravo"])
        try:
            return site.site_id
        finally:
            site.index.close()


def test_every_kind_of_change_is_logged_as_the_bytes_it_encodes_to(sites: Sites) -> None:
    bravo = _pair(sites)
    changes, body = _changes_of_every_kind(bravo)
    _send(sites, "bravo", "alpha", [*changes, body], seq=900)
    result = sites.import_("alpha")
    assert [b.status for b in result.bundles] == ["applied"]
    logged = _logged(sites, "alpha", Stream(bravo, 1))
    assert len(logged) == len(changes)
    for change in changes:
        record = logged[change.dot.counter]
        assert record == encode_change(change), record_kind(change)
        assert decode_change(record) == change


def test_a_change_in_another_encoding_of_the_same_values_is_refused(sites: Sites) -> None:
    """Dot counter 101 written with a two-byte head (0x18 0x65) instead of one
    (0x65 is above 23, so 0x18 0x65 is the shortest form; 0x19 0x00 0x65 is not):
    the same values, another encoding. Refused whole, nothing logged or applied."""
    bravo = _pair(sites)
    changes, body = _changes_of_every_kind(bravo)
    canonical = encode_change(changes[3])
    site = bytes.fromhex(bravo)
    head = b"\x84\x01\x83\x50" + site + b"\x01\x18\x67"
    assert canonical.startswith(head)
    longer = b"\x84\x01\x83\x50" + site + b"\x01\x19\x00\x67" + canonical[len(head):]
    records = [*changes[:3], EncodedChange(record_kind(changes[3]), longer), body]
    _send(sites, "bravo", "alpha", records, seq=901)
    before = sites.digest("alpha")
    result = sites.import_("alpha")
    [outcome] = result.bundles
    assert outcome.status == "rejected"
    assert outcome.error is not None and "shortest form" in outcome.error
    assert _logged(sites, "alpha", Stream(bravo, 1)) == {}
    assert sites.digest("alpha") == before


def test_changes_received_again_are_duplicates_and_a_changed_one_a_fork(sites: Sites) -> None:
    """A second bundle (another number) carrying the same records: each is found in
    the log as these very bytes and skipped. One of them with other content under
    the same dot is a fork, as before: both sides kept and issued again."""
    bravo = _pair(sites)
    changes, body = _changes_of_every_kind(bravo)
    _send(sites, "bravo", "alpha", [*changes, body], seq=902)
    sites.import_("alpha")
    digest = sites.digest("alpha")
    _send(sites, "bravo", "alpha", [*changes, body], seq=903)
    [again] = [b for b in sites.import_("alpha").bundles if b.seq == 903]
    assert (again.status, again.changes, again.new_changes, again.forks) == (
        "applied", len(changes), 0, 0)
    assert sites.digest("alpha") == digest

    renamed = Change(changes[2].dot, changes[2].ts,
                     MailboxRenamed(changes[2].op.mailbox, None, "Other"))  # type: ignore[attr-defined]
    _send(sites, "bravo", "alpha", [*changes[:2], renamed, *changes[3:], body], seq=904)
    [forked] = [b for b in sites.import_("alpha").bundles if b.seq == 904]
    assert (forked.status, forked.new_changes, forked.forks) == ("applied", 0, 1)
