"""``bundlesync status``: per peer what was sent, received and is still pending."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bundlesync.operations.site import Site

DAY_MS = 86_400_000


@dataclass
class PeerStatus:
    name: str
    site_id: str
    fingerprint: str
    pending_changes: int
    last_sent: dict[str, int] | None
    last_received: dict[str, int] | None
    acknowledged: dict[str, int]
    heard_ms: int | None
    warnings: list[str] = field(default_factory=list)
    # Worth knowing, nothing to act on: not a warning (monitoring stays OK).
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "site_id": self.site_id, "fingerprint": self.fingerprint,
            "pending_changes": self.pending_changes, "last_sent": self.last_sent,
            "last_received": self.last_received, "acknowledged": self.acknowledged,
            "heard_ms": self.heard_ms, "warnings": self.warnings, "notes": self.notes,
        }


@dataclass
class SiteStatus:
    name: str
    site_id: str
    fingerprint: str
    store: str
    incarnation: int
    users: int
    folders: int
    messages: int
    changes_logged: int
    pending_apply: bool
    peers: list[PeerStatus]
    held_back: dict[str, list[str]] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        held = [f"{user or '(store)'}: {', '.join(names)} held back by a filter (their "
                "changes are kept and applied once the filter is lifted)"
                for user, names in sorted(self.held_back.items())]
        return [w for p in self.peers for w in p.warnings] + held

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": {"name": self.name, "site_id": self.site_id, "fingerprint": self.fingerprint,
                     "incarnation": self.incarnation},
            "store": {"location": self.store, "users": self.users, "folders": self.folders,
                      "messages": self.messages},
            "changes_logged": self.changes_logged,
            "pending_apply": self.pending_apply,
            "held_back": self.held_back,
            "peers": [p.as_dict() for p in self.peers],
            "warnings": self.warnings,
        }


def site_status(site: Site, *, now_ms: int) -> SiteStatus:
    """A read-only summary; it does not scan the store (export and import do)."""
    index = site.index
    peers: list[PeerStatus] = []
    known = {row.site_id: row for row in index.peers()}
    for card in sorted(site.trust.list(), key=lambda c: c.name):
        row = known.get(card.site_id)
        ack = row.ack if row is not None else None
        pending = index.count_not_covered(ack) if ack is not None else index.count_changes()
        sent = index.last_sent(card.site_id)
        received = index.received_from(card.site_id)
        status = PeerStatus(
            name=card.name, site_id=card.site_id, fingerprint=card.fingerprint,
            pending_changes=pending,
            last_sent=None if sent is None else {
                "incarnation": sent.incarnation, "seq": sent.seq, "created_ms": sent.created_ms,
                "size": sent.size, "changes": sent.changes},
            last_received=None if not received else {
                "incarnation": received[-1].incarnation, "seq": received[-1].seq,
                "received_ms": received[-1].received_ms, "created_ms": received[-1].created_ms},
            acknowledged={f"{s.site[:8]}/{s.incarnation}": n for s, n in ack.entries}
            if ack is not None else {},
            heard_ms=row.heard_ms if row is not None else None,
        )
        quiet_since = status.last_sent["created_ms"] if status.last_sent else None
        if status.heard_ms is None and (
                quiet_since is None
                or now_ms - quiet_since <= site.config.silent_peer_days * DAY_MS):
            status.notes.append(f"{card.name}: nothing received from this peer yet")
        elif status.heard_ms is None:
            status.warnings.append(f"{card.name}: nothing received from this peer yet, "
                                   f"though bundles were sent to it")
        elif now_ms - status.heard_ms > site.config.silent_peer_days * DAY_MS:
            days = (now_ms - status.heard_ms) // DAY_MS
            status.warnings.append(f"{card.name}: not heard from for {days} days")
        by_incarnation: dict[int, list[int]] = {}
        for got in received:
            by_incarnation.setdefault(got.incarnation, []).append(got.seq)
        for incarnation, seqs in by_incarnation.items():
            missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
            if missing:
                shown = ", ".join(str(s) for s in missing[:10])
                # A later bundle carried their changes again: nothing to act on.
                status.notes.append(
                    f"{card.name}: bundles {shown} of incarnation {incarnation} never arrived "
                    "(a later bundle carried their changes; nothing is lost)")
        peers.append(status)
    return SiteStatus(
        name=site.identity.name, site_id=site.site_id, fingerprint=site.identity.fingerprint,
        store=site.config.store, incarnation=site.stream.incarnation,
        users=len(index.folder_users()),
        folders=index.count_folders(),
        messages=index.count_files(),
        changes_logged=index.count_changes(),
        pending_apply=index.has_pending(),
        peers=peers,
        held_back=index.held_back(),
    )
