"""``bundlesync export DROP``: one bundle per peer with everything it lacks.

For each peer, the bundle holds every change in the log that the peer has not
acknowledged -- ours and, as a relay, other sites' with their origin kept -- so a
lost bundle is healed by the next one and a duplicate is a no-op. A body travels
once per bundle, only for messages still alive here, and never to a peer known
to hold it (some change adding it is covered by the peer's acknowledgement).

Order of work: finish an interrupted apply, scan the store for local changes,
write each bundle atomically (the format layer: temporary name, fsync, rename),
record it, then tidy the drop: this site's older bundles to that peer are
superseded by the new one (each holds everything unacknowledged), and bundles
whose recipient has acknowledged all they carry are removed. The site's key
card is written beside them.

A run with nothing to write does only what it must: a peer that has
acknowledged everything gets no bundle, files already as they should be (the
card, revocations) are not rewritten, and our own bundles are known by the
names the state recorded for them, so no bundle is opened and neither the
bundle writer nor the reader (nor ``cryptography`` and ``zstandard`` behind
them) is imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundlesync.core.model import Body, MessageAdded, Record, VersionVector, Want
from bundlesync.errors import BundleRejected, StateError, UsageError
from bundlesync.format.volumes import (
    find_bundles,
    named_volumes,
    parse_sync_name,
    remove_leftover_temps,
)
from bundlesync.keys import PeerCard, own_card_bytes, place_revocations, write_file_atomically
from bundlesync.operations import failpoints
from bundlesync.operations.bodies import BodyFinder
from bundlesync.operations.ledger import load_message
from bundlesync.operations.scan import ScanStats, scan_store
from bundlesync.operations.site import Site
from bundlesync.state.codec import decode_change

if TYPE_CHECKING:
    from bundlesync.format import EncodedChange, HashedBody

KIND_SYNC = "sync"
# How every change record begins (bundle-v1 §6.2): a 4-item array, type 1, the dot.
_CHANGE_HEAD = b"\x84\x01\x83"
# Progress of counted work: (what, done, total or None).
Counter = Callable[[str, int, int | None], None]


@dataclass
class BundleWritten:
    peer: str
    paths: list[str]
    size: int
    changes: int
    bodies: int
    body_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "paths": self.paths, "size": self.size,
                "changes": self.changes, "bodies": self.bodies, "body_bytes": self.body_bytes}


@dataclass
class ExportResult:
    scan: ScanStats
    bundles: list[BundleWritten] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    card: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "local_changes": self.scan.changes,
            "bundles": [b.as_dict() for b in self.bundles],
            "up_to_date": self.up_to_date,
            "removed": self.removed,
            "card": self.card,
            "warnings": self.scan.warnings,
        }


def select_peers(site: Site, names: Sequence[str], *, verify: bool = True) -> list[PeerCard]:
    """The peers to export to: ``names``, or every trusted peer.

    ``verify=False`` reads the cards without checking their signatures: enough to
    know the peers by name and site id; a card a bundle is encrypted to is taken
    again, verified (:func:`_verified_card`).
    """
    cards = site.trust.list(verify=verify)
    if not names:
        if not cards:
            raise UsageError(
                "this site has no peers to export to",
                hint="Add one with 'bundlesync peer add NAME CARD' (the card comes from the "
                     "other site's 'bundlesync key export').",
            )
        return sorted(cards, key=lambda c: c.name)
    chosen = []
    for name in names:
        card = next((c for c in cards if c.name == name), None)
        if card is None:
            known = ", ".join(sorted(c.name for c in cards)) or "none"
            raise UsageError(f"no peer is called {name!r} (peers: {known})",
                             hint="See 'bundlesync peer list'.")
        chosen.append(card)
    return chosen


class BodyVanished(Exception):
    """A body planned for the bundle could not be read any more (expunged meanwhile)."""


class _BundleContent:
    """The records of one bundle, planned first (so the header's counts are known and
    the bundle is written in one pass), then produced lazily (memory stays flat)."""

    def __init__(self, site: Site, ack: VersionVector, *, peer: str,
                 counter: Counter | None = None) -> None:
        self.counter = counter
        self.site = site
        self.ack = ack
        self.asked = set(site.index.peer_wants(peer))
        self.sent: set[str] = set()
        self.wants = site.index.wanted()
        self.changes = 0
        self.bodies = 0
        self.body_bytes = 0
        self.strict = True
        self.finder = BodyFinder(site)

    def plan(self) -> dict[str, int]:
        """Decide which bodies go, and count every kind of record."""
        counts = self.site.index.kinds_not_covered(self.ack)
        self.send = list(self._bodies_to_send())
        counts["body"] = len(self.send)
        if self.wants:
            counts["want"] = len(self.wants)
        return counts

    def _bodies_to_send(self) -> Iterator[str]:
        """The bodies this bundle carries, in the order of the first add that decides
        each: a body goes with the first uncovered add whose instance is still alive
        here, unless the peer holds it already (an add of it is covered) and has not
        asked for it.

        The adds come with their registers' liveness from one join per stream, and
        the bodies' acknowledgement is looked up a list at a time: a first export
        plans 100,000 bodies without decoding a change or a statement per body.
        """
        index = self.site.index
        decided: dict[str, None] = {}  # insertion-ordered
        for add in index.adds_not_covered(self.ack):
            body = add.body
            if body in decided:
                continue
            alive = add.alive
            if alive is None:
                # Logged before the log kept the message GUID: the record says which
                # instance it adds.
                op = decode_change(add.record).op
                assert isinstance(op, MessageAdded)
                state = load_message(index, op.message)
                alive = state is not None and state.alive
            if not alive:
                continue  # another add of the same body may still need it
            decided[body] = None
        known = index.bodies_known_to(
            (body for body in decided if body not in self.asked), self.ack)
        for body in decided:
            if body in self.asked or body not in known:
                yield body
        # Asked for, but not among the changes this peer lacks: sent all the same.
        yield from sorted(self.asked - decided.keys())

    def records(self) -> Iterator[Record | EncodedChange | HashedBody]:
        # The writer's record wrappers: loaded with the writer, only when one is written.
        from bundlesync.format import EncodedChange, HashedBody  # noqa: PLC0415

        for sha in self.wants:
            yield Want(sha)
        # As the log keeps them: a record has one encoding (bundle-v1 §6.3), so the
        # stored bytes are what encoding the decoded change would give.
        for kind, record in self.site.index.records_not_covered(self.ack):
            if not record.startswith(_CHANGE_HEAD):
                # Not decoded, so checked this far: a row that is not even a change
                # record is our damage, never sent for the peer to refuse.
                raise StateError("damaged change record in the state index "
                                 f"({record[:8].hex() or 'empty'}...)")
            self.changes += 1
            yield EncodedChange(kind, record)
        with contextlib.closing(self.finder.read_many(self.send)) as bodies:
            for body, data in bodies:
                if data is None:
                    if self.strict:
                        raise BodyVanished(body)
                    continue  # gone meanwhile; its expunge travels in the next bundle
                self.bodies += 1
                self.body_bytes += len(data)
                self.sent.add(body)
                if self.counter is not None:
                    self.counter("message bodies", self.bodies, len(self.send))
                # The reader thread has just hashed these bytes: not hashed again.
                yield HashedBody(Body(body, data))


def export_drop(site: Site, drop: Path, *, to: Sequence[str] = (), encrypt: bool = True,
                max_volume_size: int | None = None, now_ms: int,
                progress: Callable[[int], None] | None = None,
                scan_progress: Callable[[str], None] | None = None,
                counter: Counter | None = None, bodies: bool = True) -> ExportResult:
    """Write one bundle per peer into ``drop`` (see the module docstring).

    ``bodies=False`` writes the changes without message bodies, except those the
    peer asked for: for a site set up on a copy of the peer's store, whose first
    exchange then carries no body both hold; the peer asks for any it lacks.
    """
    if not drop.is_dir():
        raise UsageError(f"the drop {drop} is not a directory",
                         hint="Mount the drive, or create the directory first.")
    peers = select_peers(site, to, verify=False)
    site.check_drop(drop, now_ms=now_ms)  # our own bundles there may show a restore
    # A killed export's temporary files (hundreds of MB on a stick) go first.
    remove_leftover_temps(drop, origin_name=site.name, origin_site=site.site_id)
    if site.index.has_pending():
        from bundlesync.operations.apply import apply_pending  # noqa: PLC0415 - see below

        apply_pending(site)
    else:
        # Nothing to apply: what apply_pending leaves behind then, without loading
        # the apply code (a no-change run's start-up).
        with site.index.transaction():
            site.index.clear_wants()
            site.index.set_held_back({})
    result = ExportResult(scan=scan_store(site, now_ms=now_ms, progress=scan_progress))
    index = site.index
    vector = index.version_vector()
    for card in peers:
        peer = index.peer(card.site_id)
        if peer is None or peer.name != card.name:
            with index.transaction():  # written (and synced) only when it changes
                index.put_peer(card.site_id, card.name)
            peer = index.peer(card.site_id)
        assert peer is not None
        last = index.last_sent(card.site_id)
        pending = index.count_not_covered(peer.ack)
        asking = index.wanted() or index.peer_wants(card.site_id)
        # After a move to a new incarnation (a restore) the peer must hear from us
        # even with nothing new: its answer brings back what we lost.
        if (pending == 0 and not asking and last is not None
                and last.covers == vector and last.incarnation == site.stream.incarnation):
            result.up_to_date.append(card.name)
            continue
        from bundlesync.format import BundleId, write_bundle  # noqa: PLC0415 - see the top

        recipient = _verified_card(site, card)
        stream = site.stream
        # Sequence numbers count per peer (so the peer can see a gap) and are reserved
        # before writing: a crash never lets two different bundles share an id.
        seq = site.reserve_bundle_seq(card.site_id)
        content = _BundleContent(site, peer.ack, peer=card.site_id, counter=counter)
        counts: dict[str, int] | None = content.plan()
        if not bodies and counts is not None:
            content.send = [b for b in content.send if b in content.asked]
            counts["body"] = len(content.send)
        while True:
            try:
                written = write_bundle(
                    drop, identity=site.identity,
                    bundle_id=BundleId(stream.site, stream.incarnation, seq), kind=KIND_SYNC,
                    recipients=[recipient], ack=vector, assumes=peer.ack, records=content.records(),
                    created_ms=now_ms, encrypt=encrypt, max_volume_size=max_volume_size,
                    progress=progress, counts=counts, format_version=2,
                )
                break
            except BodyVanished:
                # A message went while we wrote: write again without announcing counts
                # (the format layer then counts as it goes), leaving the vanished out.
                content.strict, counts = False, None
                content.changes = content.bodies = content.body_bytes = 0
        failpoints.reached("export")
        names = [p.name for p in written.paths]
        with index.transaction():
            index.record_sent(card.site_id, stream.incarnation, seq, created_ms=now_ms,
                              size=written.size, changes=content.changes, bodies=content.bodies,
                              covers=vector, names=names)
            # What the peer asked for has now been sent: asking again would write a
            # bundle on every run. If this bundle is lost, the peer still lacks the
            # bodies and asks again in its next bundle.
            index.set_peer_wants(card.site_id, sorted(content.asked - content.sent))
        result.bundles.append(BundleWritten(card.name, [str(p) for p in written.paths],
                                            written.size, content.changes, content.bodies,
                                            content.body_bytes))
    result.removed = tidy_drop(site, drop, keep={p for b in result.bundles for p in b.paths})
    result.card = str(place_card(site, drop))
    # Revocations travel beside the card (bundle-v2 §3.7).
    place_revocations(site.trust, drop)
    site.settle()  # what the scan recorded counts as spent from now on
    return result


def _verified_card(site: Site, card: PeerCard) -> PeerCard:
    """The peer's card from the trust store with its signature checked (the card
    a bundle is encrypted to; ``select_peers`` may have read it unchecked)."""
    for trusted in site.trust.list():
        if trusted.site_id == card.site_id:
            return trusted
    raise UsageError(f"peer {card.name} was removed from the trust store during the run",
                     hint="Run the export again.")


def place_card(site: Site, drop: Path) -> Path:
    """Put this site's card in ``drop``: the one its key files hold
    (``keys/site.bsc``, written and signed with the key), not rewritten when the
    drop holds it already, or one made from the keys if that file does not match."""
    path = drop / f"{site.name}.bsc"
    card = own_card_bytes(site.keys)
    if card is None:
        site.identity.card().write(path)
        return path
    try:
        if path.read_bytes() == card:
            return path
    except OSError:
        pass  # missing or unreadable: written below
    write_file_atomically(path, card, mode=0o644)
    return path


@dataclass(frozen=True, slots=True)
class _Ours:
    """One of this site's bundles in a drop, as far as tidying needs it."""

    path: Path
    peer: str
    seq: int
    covers: VersionVector | None  # the acknowledgement it carries, if known


def _our_bundles(site: Site, drop: Path) -> Iterator[_Ours]:
    peers = site.peer_name_prefixes()
    for path in find_bundles(drop):
        if site.names_peer_bundle(path.name, peers):
            continue  # another site's (by its name, which can only make us leave it)
        remembered = site.remembered_bundle(path)
        parsed = parse_sync_name(path.name)
        if remembered is not None and parsed is not None:
            # Named as one this site recorded writing (bundle-v1 §11): the record
            # says whom it is for and its number, as the header would. Only
            # "superseded" is judged, as for a version 2 header (whose
            # acknowledgement is sealed): a file is at worst kept a run longer.
            yield _Ours(path, remembered[0], parsed.seq, None)
            continue
        from bundlesync.format import BundleNotFound, list_bundle  # noqa: PLC0415

        try:
            header = list_bundle(path)
        except (BundleRejected, BundleNotFound):
            continue  # a foreign, damaged or vanished file is not ours to tidy away
        if header.origin_site != site.site_id or len(header.recipients) != 1:
            continue
        # A version 2 bundle's acknowledgement is sealed: only "superseded" applies.
        yield _Ours(path, header.recipients[0], header.bundle_id.seq,
                    header.header.ack if header.header is not None else None)


def tidy_drop(site: Site, drop: Path, *, keep: set[str]) -> list[str]:
    """Remove this site's bundles in ``drop`` that are superseded or fully acknowledged."""
    removed: list[str] = []
    newest: dict[str, int] = {}
    ours = list(_our_bundles(site, drop))
    for bundle in ours:
        newest[bundle.peer] = max(newest.get(bundle.peer, 0), bundle.seq)
    for bundle in ours:
        path = bundle.path
        if str(path) in keep:
            continue
        row = site.index.peer(bundle.peer)
        acked = row is not None and bundle.covers is not None and all(
            row.ack.get_count(stream) >= count for stream, count in bundle.covers.entries)
        superseded = bundle.seq < newest[bundle.peer]
        if acked or superseded:
            for volume in named_volumes(path):
                volume.unlink(missing_ok=True)
                removed.append(volume.name)
    return removed
