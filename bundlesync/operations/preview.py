"""``bundlesync export --dry-run``: what each peer's bundle would hold, writing nothing.

The store is scanned as an export would scan it, inside one transaction that is
rolled back: the local changes are counted, then forgotten, so the real export
finds them again. Neither the store, the drop nor the spool is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bundlesync.core.model import VersionVector
from bundlesync.operations.export import _BundleContent, select_peers
from bundlesync.operations.scan import scan_store
from bundlesync.operations.site import Site
from bundlesync.state.index import StateIndex


class _Rollback(Exception):
    """Raised at the end of a rehearsal so that its transaction is rolled back."""


@contextlib.contextmanager
def rehearsal(index: StateIndex) -> Iterator[None]:
    """Work on the state index that is never kept: one transaction, rolled back at the end.

    Transactions inside become savepoints of this one, so a whole scan or apply can
    run for real against the index and leave nothing behind.
    """
    with contextlib.suppress(_Rollback), index.transaction():
        yield
        raise _Rollback


@dataclass(frozen=True, slots=True)
class PeerPreview:
    peer: str
    changes: int
    bodies: int
    asked_bodies: int  # bodies the peer asked for (they are among ``bodies``)

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


def preview_export(site: Site, *, to: Sequence[str] = (), now_ms: int,
                   bodies: bool = True) -> ExportPreview:
    """Count, per peer, the changes and bodies an export now would send."""
    peers = select_peers(site, to)
    index = site.index
    with rehearsal(index):
        stats = scan_store(site, now_ms=now_ms)
        preview = ExportPreview(local_changes=stats.changes, warnings=list(stats.warnings))
        for card in peers:
            row = index.peer(card.site_id)
            ack = row.ack if row is not None else VersionVector.of({})
            # The export's own plan: the same bodies it would send (alive, not known
            # to the peer, or asked for by it).
            content = _BundleContent(site, ack, peer=card.site_id)
            content.plan()
            asked = set(index.peer_wants(card.site_id))
            going = content.send if bodies else [b for b in content.send if b in asked]
            preview.peers.append(PeerPreview(card.name, index.count_not_covered(ack),
                                             len(going), len(asked)))
    return preview
