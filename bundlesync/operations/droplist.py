"""What a drop holds, for a courier and an administrator: ``bundlesync list`` and README.txt.

Only the bundles' clear headers are read (unverified, but bounded by the format
layer), so listing a stick is quick and works on any machine. A version 2
bundle seals its creation time and counts (bundle-v2 §4): they are shown from
this site's own records for bundles it wrote or applied, from the verified
bundle for one addressed to this site and not yet applied, and are otherwise
unknown (None). With a site, each bundle is also placed: whether this site
applied it, and whether it may be erased -- the same rules the export's tidying
of the drop uses:

* a bundle this site wrote is safe to erase once its recipient acknowledged
  everything it carries, or once a newer bundle of this site to that recipient
  is in the drop (each bundle holds everything unacknowledged);
* a bundle for this site is safe to erase once this site applied it;
* any other bundle belongs to other sites: keep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundlesync.core.model import VersionVector
from bundlesync.errors import BundleRejected, BundlesyncError
from bundlesync.format.errors import BundleNotFound
from bundlesync.format.volumes import find_bundles, named_volumes
from bundlesync.keys import PeerCard, fingerprint_of
from bundlesync.operations.site import Site

if TYPE_CHECKING:
    from bundlesync.format import BundleListing

# Record kinds that are not changes of mail.
_NOT_CHANGES = ("body", "want")


@dataclass(frozen=True, slots=True)
class DropEntry:
    """One bundle in a drop, as its header and this site's state describe it."""

    name: str
    volumes: tuple[str, ...]
    size: int
    origin: str
    origin_fingerprint: str
    recipients: tuple[str, ...]
    created_ms: int | None  # None: sealed in the bundle and not known here
    seq: int
    changes: int | None
    bodies: int | None
    encrypted: bool
    applied_here: bool | None  # None: not for this site, or no site to ask
    safe_to_erase: bool | None  # None: not known without a site
    note: str
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "volumes": list(self.volumes), "size": self.size,
            "origin": {"name": self.origin, "fingerprint": self.origin_fingerprint},
            "recipients": list(self.recipients), "created_ms": self.created_ms,
            "seq": self.seq, "changes": self.changes, "bodies": self.bodies,
            "encrypted": self.encrypted, "applied_here": self.applied_here,
            "safe_to_erase": self.safe_to_erase, "note": self.note, "error": self.error,
        }


def _drop_cards(drop: Path) -> dict[str, str]:
    """Site names from the key cards exports leave in the drop (for a machine with no site)."""
    names: dict[str, str] = {}
    for path in sorted(drop.glob("*.bsc")):
        try:
            card = PeerCard.read(path)
        except BundlesyncError:
            continue  # a damaged or foreign file names nobody
        names[card.site_id] = card.name
    return names


def _name_of(site: Site | None, site_id: str, cards: dict[str, str]) -> str:
    if site is not None:
        if site_id == site.site_id:
            return site.name
        card = site.trust.by_site_id(site_id)
        if card is not None:
            return card.name
    if site_id in cards:
        return cards[site_id]
    return f"site {fingerprint_of(site_id)[:9]}"


@dataclass(frozen=True, slots=True)
class _Facts:
    """What is known of a bundle's content: from its v1 header, or sealed (v2)."""

    created_ms: int | None = None
    changes: int | None = None
    bodies: int | None = None
    covers: VersionVector | None = None  # the acknowledgement it carries


def _counted(counts: Mapping[str, int]) -> tuple[int, int]:
    return (sum(n for k, n in counts.items() if k not in _NOT_CHANGES), counts.get("body", 0))


def _facts(site: Site | None, path: Path, listing: BundleListing) -> _Facts:
    if listing.header is not None:  # version 1: the clear header says it all
        changes, bodies = _counted(listing.header.counts)
        return _Facts(listing.header.created_ms, changes, bodies, listing.header.ack)
    if site is None:
        return _Facts()
    bid = listing.bundle_id
    if bid.site == site.site_id and len(listing.recipients) == 1:
        sent = site.index.sent_bundle(listing.recipients[0], bid.incarnation, bid.seq)
        if sent is not None:
            return _Facts(sent.created_ms, sent.changes, sent.bodies, sent.covers)
        return _Facts()
    if site.site_id not in listing.recipients:
        return _Facts()
    received = site.index.received_bundle(bid.site, bid.incarnation, bid.seq)
    if received is not None:
        return _Facts(received[0], received[1])
    # For this site and not applied yet: the sealed header, from the verified bundle.
    from bundlesync.format import OpenBundle, verify_bundle  # noqa: PLC0415 - see list_drop

    with verify_bundle(path, trust=site.trust, identity=site.identity) as verified, \
            OpenBundle.from_verified(verified, identity=site.identity) as bundle:
        header = bundle.header
    changes, bodies = _counted(header.counts)
    return _Facts(header.created_ms, changes, bodies, header.ack)


def _place(site: Site | None, listing: BundleListing, facts: _Facts,
           newest_to: dict[tuple[str, str], int]) -> tuple[bool | None, bool | None, str]:
    if site is None:
        return None, None, "no site here to say whether it was applied"
    bid = listing.bundle_id
    if listing.origin_site == site.site_id:
        if len(listing.recipients) != 1:
            return None, False, "written by this site"
        peer = listing.recipients[0]
        row = site.index.peer(peer)
        if row is not None and facts.covers is not None and all(
                row.ack.get_count(stream) >= count for stream, count in facts.covers.entries):
            return None, True, "its recipient has acknowledged it"
        if bid.seq < newest_to.get((site.site_id, peer), 0):
            return None, True, "a newer bundle to the same site replaces it"
        return None, False, "waiting to be imported by its recipient"
    if site.site_id in listing.recipients:
        applied = site.index.has_received(bid.site, bid.incarnation, bid.seq)
        if applied:
            return True, True, "applied here"
        return False, False, "not yet imported here"
    return None, False, "for another site"


def list_drop(drop: Path, *, site: Site | None) -> list[DropEntry]:
    """Every bundle in ``drop``, oldest first per origin (see the module docstring)."""
    found: list[tuple[Path, BundleListing | None, str | None]] = []
    for path in find_bundles(drop):
        # The reader (and the libraries behind it) only when there is a bundle to list.
        from bundlesync.format import list_bundle  # noqa: PLC0415

        try:
            found.append((path, list_bundle(path), None))
        except BundleNotFound:
            continue  # removed since it was listed
        except BundleRejected as exc:
            found.append((path, None, exc.message))
    newest_to: dict[tuple[str, str], int] = {}
    for _path, listing, _error in found:
        if listing is not None and len(listing.recipients) == 1:
            key = (listing.origin_site, listing.recipients[0])
            newest_to[key] = max(newest_to.get(key, 0), listing.bundle_id.seq)
    entries: list[DropEntry] = []
    cards = _drop_cards(drop) if found else {}  # names for the bundles listed, if any
    for path, listed, listing_error in found:
        listing, error = listed, listing_error
        volumes = named_volumes(path)
        size = sum(_size(v) for v in volumes)
        facts = _Facts()
        if listing is not None:
            try:
                facts = _facts(site, path, listing)
            except BundleNotFound:
                continue
            except BundleRejected as exc:
                listing, error = None, exc.message
        if listing is None:
            entries.append(DropEntry(
                name=path.name, volumes=tuple(v.name for v in volumes), size=size, origin="?",
                origin_fingerprint="", recipients=(), created_ms=None, seq=0, changes=None,
                bodies=None, encrypted=False, applied_here=None, safe_to_erase=None,
                note="not a readable bundle", error=error))
            continue
        applied, safe, note = _place(site, listing, facts, newest_to)
        origin = (listing.header.origin_name if listing.header is not None
                  else _name_of(site, listing.origin_site, cards))
        entries.append(DropEntry(
            name=path.name, volumes=tuple(v.name for v in volumes), size=size,
            origin=origin, origin_fingerprint=fingerprint_of(listing.origin_site),
            recipients=tuple(_name_of(site, r, cards) for r in listing.recipients),
            created_ms=facts.created_ms, seq=listing.bundle_id.seq,
            changes=facts.changes, bodies=facts.bodies, encrypted=listing.encrypted,
            applied_here=applied, safe_to_erase=safe, note=note))
    return entries


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
