"""``bundlesync import DROP``: verify, merge and apply every bundle for this site.

Order of work, journaled so that a run killed at any point is finished by the
next one with the result of one clean run:

1. finish an interrupted apply, then scan the store, so local changes made since
   the last run are in the merge (and are never overwritten unseen);
2. list the drop; read each bundle's header (unverified, bounded) only to route
   it: bundles for other sites are left alone, bundles already applied are
   reported and skipped; the rest go in (origin, incarnation, sequence) order.
   The unverified header may only make a bundle be left alone: nothing it says
   is recorded or acted on (a drop may read differently the next time);
3. for each bundle: copy it privately and verify the copy whole (signature by a
   trusted peer) before a record is decoded, route it again by the VERIFIED
   header -- the only one acted on -- then in ONE transaction: check its
   acknowledgement for a restore of this site, sort its changes with the core
   (``sort_incoming``: new ones are logged and folded, duplicates skipped, a
   known dot with other content is a fork whose both sides are kept and
   re-issued; a change under this site's own stream is never taken as ours, it
   moves this site to a new incarnation), spool its bodies (synced to disk
   before the commit), raise the peer's acknowledgement (never above what this
   site issued), and remember the bundle as received. A bundle that fails
   anywhere leaves nothing behind (its clock observations are applied only once
   all its records were read and checked);
4. apply the pending keys to the store (``operations.apply``).

``dry_run`` does all of it inside one transaction that is rolled back, touches
neither the store nor the spool, and reports what would change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundlesync.core.hlc import MAX_AHEAD_MS
from bundlesync.core.model import Body, Change, Dot, Stream, Timestamp, VersionVector, Want
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.vv import DotSet, detect_restore, next_incarnation, sort_incoming
from bundlesync.errors import BundleRejected, UsageError
from bundlesync.format.limits import MAX_INCARNATION_JUMP
from bundlesync.format.volumes import find_bundles, parse_sync_name
from bundlesync.keys import take_key_changes
from bundlesync.operations import failpoints
from bundlesync.operations.apply import HeldBack, apply_pending
from bundlesync.operations.ledger import fold_change, fold_new, resolve_user
from bundlesync.operations.report import ApplyReport
from bundlesync.operations.scan import ScanStats, scan_store
from bundlesync.operations.site import Site
from bundlesync.operations.spool import SpoolWriter, clear_spool
from bundlesync.state.codec import decode_change
from bundlesync.state.index import StateIndex

if TYPE_CHECKING:
    from bundlesync.format import BundleHeader, BundleListing, OpenBundle

# Incarnations are at most the time in seconds plus the restores since; counters
# count changes. Far below SQLite's 63-bit integers, with room to move on.
MAX_DOT = 2**48


@dataclass
class BundleOutcome:
    path: str
    origin: str
    seq: int
    status: str  # "applied", "already applied", "rejected", "not for this site", "own"
    changes: int = 0
    new_changes: int = 0
    bodies: int = 0
    forks: int = 0
    error: str | None = None
    # The rejection itself, so a report can give its own hint and code.
    rejection: BundleRejected | None = field(default=None, repr=False, compare=False)
    superseded: dict[tuple[str, str], int] = field(default_factory=dict)

    def lost(self, user: str, mailbox: str) -> None:
        """A change of this bundle lost a conflict to a newer one (for the report)."""
        self.superseded[(user, mailbox)] = self.superseded.get((user, mailbox), 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "origin": self.origin, "seq": self.seq,
                "status": self.status, "changes": self.changes,
                "new_changes": self.new_changes, "bodies": self.bodies, "forks": self.forks,
                "error": self.error}


@dataclass
class ImportResult:
    scan: ScanStats
    report: ApplyReport
    bundles: list[BundleOutcome] = field(default_factory=list)
    dry_run: bool = False
    new_incarnation: int | None = None
    held_back: dict[str, list[str]] = field(default_factory=dict)

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
            "held_back": self.held_back,
            "warnings": self.scan.warnings,
        }


def _route(site: Site, drop: Path, result: ImportResult) -> list[tuple[Path, BundleListing]]:
    mine: list[tuple[Path, BundleListing]] = []
    peers = site.peer_name_prefixes()
    for path in find_bundles(drop):
        # Names settle what needs no reading (bundle-v1 §11): one of our own bundles
        # as the state recorded it, or a peer's bundle for another site. Such a
        # name can only make us leave a file alone, as its header could.
        if site.remembered_bundle(path) is not None:
            continue  # our own bundle for a peer: not ours to import
        parsed = parse_sync_name(path.name)
        if parsed is not None and site.names_peer_bundle(path.name, peers) and (
                parsed.recipient_prefix != site.site_id[:8]):
            result.bundles.append(BundleOutcome(str(path), _peer_label(site, parsed.site_prefix,
                                                                       parsed.origin_name),
                                                parsed.seq, "not for this site"))
            continue
        # The reader only for a bundle that may be for this site.
        from bundlesync.format import BundleNotFound, list_bundle  # noqa: PLC0415

        try:
            header = list_bundle(path)
        except BundleNotFound:
            continue  # removed from the drop since it was listed: nothing to import
        except BundleRejected as exc:
            result.bundles.append(BundleOutcome(str(path), "?", 0, "rejected", error=exc.message,
                                                rejection=exc))
            continue
        bid = header.bundle_id
        outcome = BundleOutcome(str(path), _origin_label(site, header), bid.seq, "")
        if header.origin_site == site.site_id:
            continue  # our own bundle for a peer: not ours to import
        if site.site_id not in header.recipients:
            outcome.status = "not for this site"
            result.bundles.append(outcome)
            continue
        # A version 2 listing has no creation time: such a bundle is verified, and
        # left alone then if its verified creation time is the one received.
        if header.header is not None and site.index.received_created_ms(
                bid.site, bid.incarnation, bid.seq) == header.header.created_ms:
            # The same id with another creation time is another bundle: its origin
            # was restored and reused the number. It is read; its dots tell the rest.
            outcome.status = "already applied"
            result.bundles.append(outcome)
            continue
        mine.append((path, header))
    mine.sort(key=lambda item: (item[1].bundle_id.site, item[1].bundle_id.incarnation,
                                item[1].bundle_id.seq))
    return mine


def _peer_label(site: Site, prefix: str, own_name: str) -> str:
    """The local name of the trusted peer whose bundles' names start so (report only)."""
    for card in site.trust.list(verify=False):
        if card.site_id.startswith(prefix) and card.own_name == own_name:
            return card.name
    return own_name


def _origin_label(site: Site, listing: BundleListing) -> str:
    """Who a listed bundle claims to come from, for the report only (unverified)."""
    if listing.header is not None:
        return listing.header.origin_name
    card = site.trust.by_site_id(listing.origin_site)
    return card.name if card is not None else listing.origin_site[:8]


def _still_ours(site: Site, header: BundleHeader, outcome: BundleOutcome) -> bool:
    """Route again by the verified header (the listing read an unverified one)."""
    bid = header.bundle_id
    if header.origin_site == site.site_id:
        outcome.status = "own"
    elif site.site_id not in header.recipients:
        outcome.status = "not for this site"
    elif site.index.received_created_ms(bid.site, bid.incarnation, bid.seq) == (
            header.created_ms):
        outcome.status = "already applied"
    else:
        return True
    return False


def _held(index: StateIndex, dot: Dot) -> Change | None:
    record = index.change_record(dot)
    return None if record is None else decode_change(record)


def _reincarnate(site: Site, *, keep_through: int, evidence: list[VersionVector | DotSet],
                 now_ms: int, result: ImportResult) -> None:
    stream = site.reincarnate(keep_through=keep_through, evidence=evidence, now_ms=now_ms)
    result.new_incarnation = stream.incarnation


def _handle_restore(site: Site, header: BundleHeader, result: ImportResult, *,
                    remembered: tuple[Stream, int], now_ms: int) -> None:
    """A peer acknowledges more of our stream than we remember: we were restored.

    ``remembered`` is our stream and how many changes of it the state held when
    this run started, before the scan recorded new ones: changes numbered above
    that may have reused counters the peer already holds.
    """
    ours = site.stream
    spent = remembered[1] if remembered[0] == ours else site.index.stream_max(ours)
    if not detect_restore(ours, spent, header.ack):
        return
    evidence: list[VersionVector | DotSet] = [header.ack]
    # Incarnations are taken from the clock (seconds) plus one per collision: an
    # acknowledgement claiming one far above is forged, not evidence (bundle-v1 §9.1).
    ceiling = max(ours.incarnation, now_ms // 1000) + MAX_INCARNATION_JUMP
    if next_incarnation(ours, evidence, floor=now_ms // 1000).incarnation > ceiling:
        evidence = []
        result.report.warn(f"bundle {header.bundle_id.site[:8]}: its acknowledgement claims "
                           "an incarnation of this site far beyond any it can have made; "
                           "not followed")
    _reincarnate(site, keep_through=min(header.ack.get_count(ours), spent),
                 evidence=evidence, now_ms=now_ms, result=result)


def _take(site: Site, change: Change, record: bytes, *, outcome: BundleOutcome,
          streams: set[Stream], now_ms: int, result: ImportResult) -> None:
    """Sort one incoming change under this site's own stream with the core and fold it."""
    index = site.index
    ours = site.stream
    if _held(index, change.dot) == change:
        return  # our own change coming back through a relay
    # Only this site issues its own stream. A change under it that we did not
    # make means our state is older than what we issued (a restore), or someone
    # forged it: it is never taken as ours. We move to a new incarnation, and
    # the old one becomes history like any other site's stream.
    _reincarnate(site, keep_through=index.stream_max(ours),
                 evidence=[DotSet.of([change.dot])], now_ms=now_ms, result=result)
    intake = sort_incoming([change], held=lambda dot: _held(index, dot))
    for new in intake.new:
        # sort_incoming found no change held under its dot (one change at a time).
        if fold_change(index, new, record=record, superseded=outcome.lost, unknown=True):
            outcome.new_changes += 1
            streams.add(new.dot.stream)
    _fork(site, intake.forks, outcome=outcome, streams=streams)


def _fork(site: Site, forks: Sequence[tuple[Change, Change]], *, outcome: BundleOutcome,
          streams: set[Stream]) -> None:
    for held, incoming in forks:
        # One dot, two contents: its site reused a counter. Keep both: the join
        # ignores dots, and both are re-issued under our stream so every site gets
        # both (docs/conflict-rules.md, "Restored sites").
        outcome.forks += 1
        for again in site.reissue([held, incoming]):
            fold_change(site.index, again)
        streams.add(site.stream)


# Changes sorted and folded together: their dots are checked with one range query
# per stream and their states read and written with one statement per batch.
FOLD_BATCH = 500


class _Intake:
    """The incoming changes of one bundle, sorted with the core and folded in batches.

    The order of the bundle is kept: a batch is folded before a change that needs
    the state as it is (one under this site's own stream, a fork) is taken. Each
    change comes with its record as the bundle carried it, which is what the log
    keeps (the reader accepts one encoding per record: bundle-v1 §6.3).
    """

    def __init__(self, site: Site, *, outcome: BundleOutcome, streams: set[Stream],
                 now_ms: int, result: ImportResult) -> None:
        self.site = site
        self.outcome = outcome
        self.streams = streams
        self.now_ms = now_ms
        self.result = result
        self.waiting: list[tuple[Change, bytes]] = []
        self._ours = site.stream

    def add(self, change: Change, record: bytes) -> None:
        dot = change.dot
        if dot.incarnation > MAX_DOT or dot.counter > MAX_DOT:
            # The state index stores 63-bit integers, and a forged incarnation of ours
            # near the top would leave this site no incarnation to move to.
            raise BundleRejected(f"a change carries an out-of-range dot {dot}")
        ours = self._ours
        if dot.site == ours.site and dot.incarnation >= ours.incarnation:
            self.flush()
            _take(self.site, change, record, outcome=self.outcome, streams=self.streams,
                  now_ms=self.now_ms, result=self.result)
            self._ours = self.site.stream  # taking it moved this site on
            return
        self.waiting.append((change, record))
        if len(self.waiting) >= FOLD_BATCH:
            self.flush()

    def flush(self) -> None:
        batch, self.waiting = self.waiting, []
        if not batch:
            return
        index = self.site.index
        by_stream: dict[tuple[str, int], list[int]] = {}
        for change, _record in batch:
            dot = change.dot
            by_stream.setdefault((dot.site, dot.incarnation), []).append(dot.counter)
        known = {key: index.known_counters(Stream(*key), min(counters), max(counters))
                 for key, counters in by_stream.items()}
        taken: dict[Dot, Change] = {}

        def held(dot: Dot) -> Change | None:
            if dot in taken:
                return taken[dot]
            return _held(index, dot) if dot.counter in known[dot.site, dot.incarnation] else None

        run: list[tuple[Change, bytes | None]] = []
        for change, record in batch:
            dot = change.dot
            if dot not in taken and dot.counter not in known[dot.site, dot.incarnation]:
                # No change is held under this dot, here or earlier in the bundle: the
                # core would sort it as new (sort_incoming), without a fork to keep.
                taken[dot] = change
                run.append((change, record))
                continue
            if dot not in taken and index.change_record(dot) == record:
                # The log holds this very record: a duplicate, as the core would
                # find by decoding it (one encoding per change, bundle-v1 §6.3).
                continue
            intake = sort_incoming([change], held=held)
            for new in intake.new:
                taken[new.dot] = new
                run.append((new, record))
            if intake.forks:
                self._fold(run)
                run = []
                _fork(self.site, intake.forks, outcome=self.outcome, streams=self.streams)
        self._fold(run)

    def _fold(self, run: list[tuple[Change, bytes | None]]) -> None:
        if not run:
            return
        fold_new(self.site.index, run, superseded=self.outcome.lost)
        self.outcome.new_changes += len(run)
        self.streams.update({Stream(change.dot.site, change.dot.incarnation)
                             for change, _record in run})


def _ingest(site: Site, path: Path, *, now_ms: int, dry_run: bool, outcome: BundleOutcome,
            result: ImportResult, remembered: tuple[Stream, int]) -> None:
    """Verify and take in one bundle, acting only on its verified header."""
    index = site.index
    streams: set[Stream] = set()
    wants: list[str] = []
    spool = SpoolWriter(site.spool, index)
    from bundlesync.format import open_bundle  # noqa: PLC0415 - only when a bundle is read

    try:
        # A large bundle's private copy goes beside the state, not to a small /tmp.
        with open_bundle(path, identity=site.identity, trust=site.trust,
                         scratch=site.home) as bundle:
            header = bundle.header
            outcome.origin, outcome.seq = header.origin_name, header.bundle_id.seq
            if not _still_ours(site, header, outcome):
                spool.abandon()
                return
            # The acknowledgement first: if it shows we were restored, the records
            # below already meet our new incarnation.
            _handle_restore(site, header, result, remembered=remembered, now_ms=now_ms)
            newest = _read_records(site, bundle, now_ms=now_ms, dry_run=dry_run,
                                   outcome=outcome, streams=streams, wants=wants, spool=spool,
                                   result=result)
        spool.finish()  # the bodies are on disk before the index says they are spooled
    except BaseException:
        spool.abandon()
        raise
    # Observed only now: a bundle rejected anywhere above leaves the clock alone.
    # Clamped (bundle-v2 §2.5): a peer with a wrong clock or a stolen key cannot
    # drag this site's clock beyond the allowed skew; its change keeps its stamp.
    if newest is not None:
        limit = now_ms + MAX_AHEAD_MS
        if newest.wall_ms > limit:
            # Some clock is wrong (this machine's, years behind, or the peer's): say so,
            # once per bundle, with the peer's name.
            hours = (newest.wall_ms - now_ms) / 3_600_000
            ahead = f"{hours / 24 / 365.25:.1f} years" if hours >= 24 * 365 else f"{hours:.1f} h"
            result.scan.warnings.append(
                f"{outcome.origin} stamped changes {ahead} ahead of this machine's clock "
                "(taken as no later than an hour ahead); check the clocks of both sites")
        site.clock.observe(newest if newest.wall_ms <= limit
                           else Timestamp(limit, 0, newest.site), now_ms)
    index.advance_streams(sorted(streams))
    _remember(site, header, outcome=outcome, wants=wants, now_ms=now_ms)


def _read_records(site: Site, bundle: OpenBundle, *, now_ms: int, dry_run: bool,
                  outcome: BundleOutcome, streams: set[Stream], wants: list[str],
                  spool: SpoolWriter, result: ImportResult) -> Timestamp | None:
    """Take the records in; the newest timestamp seen, for the clock once all is checked."""
    newest: Timestamp | None = None
    # Decompression, decryption and the bodies' hashes run in a reader thread
    # ahead of the folding below (bounded: format.reader.READ_AHEAD_BYTES).
    from bundlesync.format.reader import (  # noqa: PLC0415 - loaded with the reader
        read_ahead,
        received_weight,
    )

    intake = _Intake(site, outcome=outcome, streams=streams, now_ms=now_ms, result=result)
    for record, encoding in read_ahead(bundle.records_as_received(), weigh=received_weight):
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
        if newest is None or (record.ts.wall_ms, record.ts.counter) > (
                newest.wall_ms, newest.counter):
            newest = record.ts
        intake.add(record, encoding)
    intake.flush()
    return newest


def _honest_ack(site: Site, ack: VersionVector) -> VersionVector:
    """A peer's acknowledgement, claiming no more of our streams than we issued.

    Trusting a claim beyond that would let a peer silence us: the changes we make
    under those counters would never be sent to it.
    """
    issued = dict(site.index.site_streams(site.site_id))
    return VersionVector.of({
        stream: min(n, issued.get(stream, 0)) if stream.site == site.site_id else n
        for stream, n in ack.items()
    })


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
    bid = header.bundle_id
    # The high-water mark of the origin's bundles (bundle-v2 §2.4): an older bundle
    # (a replay, or one that arrived late) may merge its changes, but its word on
    # what the peer holds and wants is superseded and never replaces the newer one.
    received = index.received_from(bid.site)
    newest = max(((r.incarnation, r.seq) for r in received), default=None)
    # An origin restored from an old copy (undetected there yet) numbers its bundles
    # again from below the ones seen here, even at an older incarnation: a bundle
    # written after every bundle received from it is its newest word all the same.
    # Taken for stale, the origin would be sent what it holds on every run and
    # never answer (it has nothing new). A bundle that arrived late was written
    # before a newer one and stays superseded either way.
    if newest is None or (bid.incarnation, bid.seq) >= newest or (
            header.created_ms > max(r.created_ms for r in received)):
        # The peer's newest word replaces the old one, never merges with it: a peer
        # restored from an old copy acknowledges less, and must be sent that again.
        index.set_peer_ack(header.origin_site, _honest_ack(site, header.ack), heard_ms=now_ms)
        index.set_peer_wants(header.origin_site, wants)
    failpoints.reached("ingest")
    index.forget_received(bid.site, bid.incarnation, bid.seq)  # an id reused after a restore
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
                progress: Callable[[str, int, int | None], None] | None = None,
                include: Sequence[str] = (), exclude: Sequence[str] = ()
                ) -> ImportResult:
    """Import every bundle in ``drop`` addressed to this site (see the module docstring).

    ``include``/``exclude`` narrow the configured mailbox filter for this run: what
    they exclude is held back (logged and acknowledged, not applied to the store)
    until a run without them (docs/conflict-rules.md, "Filters")."""
    if include or exclude:
        site.config = site.config.with_filters(include=include, exclude=exclude)
    if not drop.is_dir():
        raise UsageError(f"the drop {drop} is not a directory",
                         hint="Mount the drive, or check the path.")
    index = site.index
    # A dry run does everything inside one transaction that is rolled back.
    with index.rehearsal() if dry_run else contextlib.nullcontext():
        # Our own bundles in the drop can show a restore the mark could not (home
        # restored whole): checked before the scan records anything.
        result_stream = site.check_drop(drop, now_ms=now_ms)
        if not dry_run:
            apply_pending(site)
        remembered = (site.stream, index.stream_max(site.stream))
        result = ImportResult(scan=scan_store(site, now_ms=now_ms), report=ApplyReport(),
                              dry_run=dry_run)
        if result_stream is not None:
            result.new_incarnation = result_stream.incarnation
        # Key changes first (bundle-v2 §3.7, §3.8): a revoked key's bundles in the same
        # drop are then refused, a successor key's are read.
        for note in take_key_changes(site.trust, drop, dry_run=dry_run):
            result.report.warn(note)
        for path, header in _route(site, drop, result):
            outcome = BundleOutcome(str(path), _origin_label(site, header),
                                    header.bundle_id.seq, "applied")
            if progress is not None:
                total = None if header.header is None else header.header.record_count
                progress(f"reading {path.name[:24]}", 0, total)
            try:
                with index.transaction():
                    _ingest(site, path, now_ms=now_ms, dry_run=dry_run, outcome=outcome,
                            result=result, remembered=remembered)
            except BundleRejected as exc:
                outcome.status = "rejected"
                outcome.error = exc.message
                outcome.rejection = exc
            result.bundles.append(outcome)
        held = HeldBack()
        apply_pending(site, dry_run=dry_run, report=result.report, progress=progress, held=held)
        result.held_back = held.mailboxes
        _report_conflicts(site, result)
        if not dry_run and (not index.has_pending() or held.only_held(index.count_pending())):
            # Bodies of held-back mail are not kept: lifting the filter asks the
            # peers for them again (want records).
            clear_spool(site.spool, index)
        if not dry_run:
            site.settle()
    return result
