"""``bundlesync export --dry-run``: what each peer's bundle would hold, writing nothing.

The store is scanned as an export would scan it, inside one transaction that is
rolled back: the local changes are counted, then forgotten, so the real export
finds them again. Neither the store, the drop nor the spool is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bundlesync.core.model import VersionVector
from bundlesync.operations.export import select_peers
from bundlesync.operations.scan import scan_store
from bundlesync.operations.site import Site


@dataclass(frozen=True, slots=True)
class PeerPreview:
    peer: str
    changes: int
    bodies: int
    asked_bodies: int

    def as_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "changes": self.changes, "bodies": self.bodies,
                "asked_bodies": self.asked_bodies}


@dataclass
class ExportPreview:
    local_changes: int
    peers: list[PeerPreview] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": True, "local_changes": self.local_changes,
                "bundles": [p.as_dict() for p in self.peers], "warnings": self.warnings}


def preview_export(site: Site, *, to: Sequence[str] = (), now_ms: int) -> ExportPreview:
    """Count, per peer, the changes and bodies an export now would send."""
    peers = select_peers(site, to)
    index = site.index
    index.db.execute("BEGIN IMMEDIATE")
    try:
        stats = scan_store(site, now_ms=now_ms)
        preview = ExportPreview(local_changes=stats.changes, warnings=list(stats.warnings))
        for card in peers:
            row = index.peer(card.site_id)
            ack = row.ack if row is not None else VersionVector.of({})
            changes = 0
            bodies: set[str] = set()
            for _dot, body, _record in index.changes_not_covered(ack):
                changes += 1
                if body is not None and body not in bodies and not index.body_known_to(body, ack):
                    bodies.add(body)
            asked = set(index.wanted()) | set(index.peer_wants(card.site_id))
            preview.peers.append(PeerPreview(card.name, changes, len(bodies),
                                             len(asked - bodies)))
    finally:
        index.db.execute("ROLLBACK")
    return preview
