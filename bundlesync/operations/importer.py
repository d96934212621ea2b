"""``bundlesync import DROP``: verify, merge and apply every bundle for this site.

Order of work, journaled so that a run killed at any point is finished by the
next one with the result of one clean run:

1. finish an interrupted apply, then scan the store, so local changes made since
   the last run are in the merge (and are never overwritten unseen);
2. list the drop; read each bundle's header (unverified, bounded) only to route
   it: bundles for other sites are left alone, bundles already applied are
   reported and skipped; the rest go in (origin, incarnation, sequence) order;
3. for each bundle: verify it whole (signature by a trusted peer, every frame)
   before a record is decoded, then in ONE transaction log and fold its new
   changes (duplicates by dot are skipped), spool its bodies (synced to disk
   before the commit), raise the peer's acknowledgement, and remember the bundle
   as received. A bundle that fails anywhere leaves nothing behind;
4. apply the pending keys to the store (``operations.apply``).

``dry_run`` does all of it inside one transaction that is rolled back, touches
neither the store nor the spool, and reports what would change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundlesync.core.model import Body, Change, Stream, Want
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.vv import detect_restore, next_incarnation
from bundlesync.errors import BundleRejected, UsageError
from bundlesync.format import BundleHeader, BundleNotFound, find_bundles, open_bundle, read_header
from bundlesync.format.limits import MAX_INCARNATION_JUMP
from bundlesync.operations import failpoints
from bundlesync.operations.apply import apply_pending
from bundlesync.operations.ledger import decode_change, encode_change, fold_change, resolve_user
from bundlesync.operations.report import ApplyReport
from bundlesync.operations.scan import ScanStats, scan_store
from bundlesync.operations.site import Site
from bundlesync.operations.spool import SpoolWriter, clear_spool
from bundlesync.state.index import StateIndex


@dataclass
class BundleOutcome:
    path: str
    origin: str
    seq: int
    status: str  # "applied", "already applied", "rejected", "not for this site", "own"
    changes: int = 0
    new_changes: int = 0
    bodies: int = 0
    error: str | None = None
    superseded: dict[tuple[str, str], int] = field(default_factory=dict)

    def lost(self, user: str, mailbox: str) -> None:
        """A change of this bundle lost a conflict to a newer one (for the report)."""
        self.superseded[(user, mailbox)] = self.superseded.get((user, mailbox), 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "origin": self.origin, "seq": self.seq,
                "status": self.status, "changes": self.changes,
                "new_changes": self.new_changes, "bodies": self.bodies, "error": self.error}


@dataclass
class ImportResult:
    scan: ScanStats
    report: ApplyReport
    bundles: list[BundleOutcome] = field(default_factory=list)
    dry_run: bool = False
    new_incarnation: int | None = None

    @property
    def rejected(self) -> list[BundleOutcome]:
        return [b for b in self.bundles if b.status == "rejected"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "local_changes": self.scan.changes,
            "bundles": [b.as_dict() for b in self.bundles],
            "changes": self.report.as_dict(),
            "new_incarnation": self.new_incarnation,
            "warnings": self.scan.warnings,
        }


def _route(site: Site, drop: Path, result: ImportResult) -> list[tuple[Path, BundleHeader]]:
    mine: list[tuple[Path, BundleHeader]] = []
    for path in find_bundles(drop):
        try:
            header = read_header(path)
        except BundleNotFound:
            continue  # removed from the drop since it was listed: nothing to import
        except BundleRejected as exc:
            result.bundles.append(BundleOutcome(str(path), "?", 0, "rejected", error=exc.message))
            continue
        bid = header.bundle_id
        outcome = BundleOutcome(str(path), header.origin_name, bid.seq, "")
        if header.origin_site == site.site_id:
            continue  # our own bundle for a peer: not ours to import
        if site.site_id not in header.recipients:
            outcome.status = "not for this site"
            result.bundles.append(outcome)
            continue
        if site.index.has_received(bid.site, bid.incarnation, bid.seq):
            outcome.status = "already applied"
            result.bundles.append(outcome)
            continue
        mine.append((path, header))
    mine.sort(key=lambda item: (item[1].bundle_id.site, item[1].bundle_id.incarnation,
                                item[1].bundle_id.seq))
    return mine


def _handle_restore(site: Site, header: BundleHeader, result: ImportResult, *,
                    remembered: int, now_ms: int) -> None:
    """A peer acknowledges more of our stream than we remember: we were restored.

    ``remembered`` is how many changes of our stream the state held when this run
    started, before the scan recorded new ones.
    """
    index: StateIndex = site.index
    ours = site.stream
    acked = header.ack.get_count(ours)
    if not detect_restore(ours, remembered, header.ack):
        return
    # Our changes numbered above what we remembered before the restore may have
    # collided with the forgotten ones; the peer ignored them as duplicates. Re-issue
    # them under a new incarnation, and forget the colliding dots so the peer's
    # originals can come back to us.
    # Above every incarnation seen, and at least the time in seconds: two restores of
    # one old copy, neither aware of the other, still take different incarnations.
    fresh = next_incarnation(ours, [header.ack], floor=now_ms // 1000).incarnation
    # Incarnations are taken from the clock (seconds) plus one per collision: an
    # acknowledgement claiming one far above is forged, not evidence (bundle-v1 §9.1).
    ceiling = max(ours.incarnation, now_ms // 1000) + MAX_INCARNATION_JUMP
    if fresh > ceiling:
        fresh = next_incarnation(ours, [], floor=now_ms // 1000).incarnation
        result.report.warn(f"bundle {header.bundle_id.site[:8]}: its acknowledgement claims "
                           "an incarnation of this site far beyond any it can have made; "
                           "not followed")
    while index.stream_max(Stream(ours.site, fresh)) > 0:
        fresh += 1
    index.set_meta("incarnation", fresh)
    index.set_meta("counter", 0)
    rows = index.db.execute(
        "SELECT counter, record FROM changes WHERE site = ? AND incarnation = ? AND counter > ? "
        "ORDER BY counter", (ours.site, ours.incarnation, min(acked, remembered)),
    ).fetchall()
    for counter, record in rows:
        old = decode_change(bytes(record))
        index.db.execute(
            "DELETE FROM changes WHERE site = ? AND incarnation = ? AND counter = ?",
            (ours.site, ours.incarnation, counter))
        again = site.new_change(old.op, now_ms=0, ts=old.ts)
        fold_change(index, again)
    index.db.execute("UPDATE streams SET contiguous = MIN(contiguous, ?) WHERE site = ? AND "
                     "incarnation = ?", (min(acked, remembered), ours.site, ours.incarnation))
    index.advance_streams([site.stream])
    result.new_incarnation = fresh


def _ingest(site: Site, path: Path, header: BundleHeader, *, now_ms: int, dry_run: bool,
            outcome: BundleOutcome) -> None:
    index = site.index
    streams: set[Stream] = set()
    wants: list[str] = []
    spool = SpoolWriter(site.spool, index)
    try:
        _read_records(site, path, now_ms=now_ms, dry_run=dry_run, outcome=outcome,
                      streams=streams, wants=wants, spool=spool)
        spool.finish()  # the bodies are on disk before the index says they are spooled
    except BaseException:
        spool.abandon()
        raise
    index.advance_streams(sorted(streams))
    _remember(site, header, outcome=outcome, wants=wants, now_ms=now_ms)


def _read_records(site: Site, path: Path, *, now_ms: int, dry_run: bool,
                  outcome: BundleOutcome, streams: set[Stream], wants: list[str],
                  spool: SpoolWriter) -> None:
    index = site.index
    with open_bundle(path, identity=site.identity, trust=site.trust) as bundle:
        for record in bundle.records():
            if isinstance(record, Want):
                wants.append(record.sha256)
                continue
            if isinstance(record, Body):
                outcome.bodies += 1
                # Spooled even when a file here holds the same bytes: that file may
                # be expunged by this very import before the body is delivered.
                if not dry_run:
                    spool.add(record)
                continue
            assert isinstance(record, Change)
            outcome.changes += 1
            site.clock.observe(record.ts, now_ms)
            if fold_change(index, record, record=encode_change(record),
                           superseded=outcome.lost):
                outcome.new_changes += 1
                streams.add(record.dot.stream)


def _remember(site: Site, header: BundleHeader, *, outcome: BundleOutcome, wants: list[str],
              now_ms: int) -> None:
    """The peer's acknowledgement and wants, and the bundle as received."""
    index = site.index
    site.save_clock()
    peer = index.peer(header.origin_site)
    old_ack = peer.ack if peer is not None else None
    if peer is None:
        index.put_peer(header.origin_site, header.origin_name)
    del old_ack
    # The peer's newest word replaces the old one, never merges with it: a peer
    # restored from an old copy acknowledges less, and must be sent that again.
    index.set_peer_ack(header.origin_site, header.ack, heard_ms=now_ms)
    index.set_peer_wants(header.origin_site, wants)
    bid = header.bundle_id
    failpoints.reached("ingest")
    index.record_received(bid.site, bid.incarnation, bid.seq, received_ms=now_ms,
                          created_ms=header.created_ms, changes=outcome.changes,
                          new_changes=outcome.new_changes)


def _report_conflicts(site: Site, result: ImportResult) -> None:
    """Tally the changes that lost a conflict, by the mailbox they are now in."""
    resolved: dict[str, dict[str, ResolvedMailbox]] = {}
    for outcome in result.bundles:
        for (user, mailbox), count in outcome.superseded.items():
            if user not in resolved:
                resolved[user] = resolve_user(site.index, user)
            where = resolved[user].get(mailbox)
            path = resolved[user][where.canonical].path if where is not None and (
                where.canonical in resolved[user]) else ("(deleted mailbox)",)
            result.report.conflict(user, path, count)


def import_drop(site: Site, drop: Path, *, dry_run: bool = False, now_ms: int,
                progress: Callable[[str, int, int | None], None] | None = None
                ) -> ImportResult:
    """Import every bundle in ``drop`` addressed to this site (see the module docstring)."""
    if not drop.is_dir():
        raise UsageError(f"the drop {drop} is not a directory",
                         hint="Mount the drive, or check the path.")
    index = site.index
    if dry_run:
        index.db.execute("BEGIN IMMEDIATE")
    try:
        if not dry_run:
            apply_pending(site)
        remembered = index.stream_max(site.stream)
        result = ImportResult(scan=scan_store(site, now_ms=now_ms), report=ApplyReport(),
                              dry_run=dry_run)
        for path, header in _route(site, drop, result):
            outcome = BundleOutcome(str(path), header.origin_name, header.bundle_id.seq,
                                    "applied")
            if progress is not None:
                progress(f"reading {path.name[:24]}", 0, sum(header.counts.values()))
            try:
                with index.transaction():
                    _ingest(site, path, header, now_ms=now_ms, dry_run=dry_run, outcome=outcome)
                    _handle_restore(site, header, result, remembered=remembered, now_ms=now_ms)
            except BundleRejected as exc:
                outcome.status = "rejected"
                outcome.error = exc.message
            result.bundles.append(outcome)
        apply_pending(site, dry_run=dry_run, report=result.report, progress=progress)
        _report_conflicts(site, result)
        if not dry_run and not index.has_pending():
            clear_spool(site.spool, index)
    finally:
        if dry_run:
            index.db.execute("ROLLBACK")
    return result
