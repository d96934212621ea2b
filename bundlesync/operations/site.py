"""A site: its home directory, configuration, keys, peers, state index and store.

``open_site`` is how every operation starts: it takes the site lock (two runs on
one site exclude each other), reads the configuration, loads the keys and opens
the state index. ``init_site`` creates all of that the first time.

Home layout::

    <home>/bundlesync.toml     configuration (operations.config)
    <home>/keys/               this site's identity (bundlesync.keys), 0600 files
    <home>/peers/              trusted peers' key cards (bundlesync.keys.TrustStore)
    <home>/state.sqlite        the state index (bundlesync.state.index)
    <home>/spent.json          the high-water mark of counters spent (operations.spent)
    <home>/spool/              bodies received and not yet delivered, by SHA-256
    <home>/lock                held (flock) while a run works on the site
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bundlesync.core.hlc import HybridClock
from bundlesync.core.model import Change, Dot, Operation, Stream, Timestamp, VersionVector
from bundlesync.core.vv import DotSet, detect_restore, reemit, reincarnate
from bundlesync.errors import BundleRejected, ConfigError, LockHeld, StateError, StoreError
from bundlesync.format.volumes import named_volumes, parse_sync_name
from bundlesync.keys import (
    SiteIdentity,
    TrustedCards,
    TrustStore,
    load_identity,
    peek_identity,
    site_paths,
)
from bundlesync.operations.config import CONFIG_NAME, SiteConfig, read_config
from bundlesync.operations.ledger import fold_change
from bundlesync.operations.spent import BLOCK, SpentMark, read_mark, write_mark
from bundlesync.state.codec import decode_change
from bundlesync.state.index import SentRow, StateIndex
from bundlesync.stores.base import Store
from bundlesync.stores.maildir import MaildirStore

if TYPE_CHECKING:
    from bundlesync.format.header import BundleId

STATE_NAME = "state.sqlite"


@contextlib.contextmanager
def site_lock(home: Path) -> Iterator[None]:
    """Hold the site's lock for the duration; refuse at once if another run holds it."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise LockHeld(
                f"another bundlesync run (process {holder}) is working on the site at {home}",
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def resolve_home(home: Path | None) -> Path:
    return site_paths(home).home


@dataclass
class Site:
    """Everything an operation needs about this site, opened under the lock.

    The secret keys are loaded (and checked) on first use of :attr:`identity`: a
    run that signs and reads nothing -- a no-change export -- knows the site by
    the name and site id its key file records (``keys.peek_identity``), without
    loading ``cryptography``.
    """

    home: Path
    config: SiteConfig
    keys: Path
    trust: TrustStore
    index: StateIndex
    store: Store
    clock: HybridClock
    mark: SpentMark | None = None
    # (name, site id) as the key file records them; None: taken from the keys.
    recorded: tuple[str, str] | None = None
    _identity: SiteIdentity | None = field(default=None, repr=False)

    @property
    def identity(self) -> SiteIdentity:
        """This site's keys, loaded from ``keys/`` the first time they are needed."""
        if self._identity is None:
            identity = load_identity(self.keys)
            if self.recorded is not None and self.recorded != (identity.name,
                                                               identity.site_id):
                # load_identity checks the recorded site id against the key; the
                # file cannot have changed under the lock, but say so if it did.
                raise ConfigError(f"the key file in {self.keys} changed during the run",
                                  hint="Run the command again.")
            self._identity = identity
        return self._identity

    @property
    def name(self) -> str:
        """This site's name (what its bundles carry as origin name)."""
        return self.recorded[0] if self.recorded is not None else self.identity.name

    @property
    def site_id(self) -> str:
        return self.recorded[1] if self.recorded is not None else self.identity.site_id

    @property
    def spool(self) -> Path:
        return self.home / "spool"

    @property
    def stream(self) -> Stream:
        return Stream(self.site_id, self.index.incarnation())

    def new_change(self, op: Operation, *, now_ms: int, ts: Timestamp | None = None) -> Change:
        """Give a local operation its dot and timestamp (inside the caller's transaction)."""
        stream = self.stream
        # Spent in the index first, marked before the transaction commits: the
        # counter is used only once both hold it.
        counter = self.index.next_counter()
        self._reserve(stream, counter)
        stamp = ts if ts is not None else self.clock.tick(now_ms)
        self.save_clock()
        return Change(Dot(stream.site, stream.incarnation, counter), stamp, op)

    def new_changes_at(self, ops: Sequence[Operation], ts: Timestamp) -> list[Change]:
        """:meth:`new_change` for many operations at one given timestamp (an inventory):
        their counters spent and marked at once."""
        if not ops:
            return []
        stream = self.stream
        first = self.index.spend_counters(len(ops))
        self._reserve(stream, first + len(ops) - 1)
        return [Change(Dot(stream.site, stream.incarnation, first + n), ts, op)
                for n, op in enumerate(ops)]

    def reissue(self, changes: Sequence[Change]) -> list[Change]:
        """The same changes under the next dots of this site's stream (core ``reemit``)."""
        stream = self.stream
        counter = self.index.last_counter()
        again = reemit(changes, stream, counter + 1)
        self._reserve(stream, counter + len(again))
        self.index.spend_counters(len(again))
        return again

    # -- what this site has spent (operations.spent) --------------------------------

    def _reserve(self, stream: Stream, counter: int) -> None:
        """Raise the high-water mark before ``counter`` is used (a block at a time)."""
        mark = self.mark
        if mark is None or mark.incarnation != stream.incarnation:
            mark = SpentMark(self.site_id, stream.incarnation)
        if counter > mark.reserved:
            self._write_mark(mark.reserve(counter))

    def _write_mark(self, mark: SpentMark) -> None:
        write_mark(self.home, mark)
        self.mark = mark

    def _mark_from_index(self) -> SpentMark:
        stream = self.stream
        counter = self.index.last_counter()
        return SpentMark(self.site_id, stream.incarnation, reserved=counter + BLOCK,
                         committed=counter, seqs=self.index.bundle_seqs(stream.incarnation))

    def settle(self) -> None:
        """Record in the mark what the index now holds (after the run's commits, before
        a bundle leaves), so that an index restored to before this point is noticed."""
        fresh = self._mark_from_index()
        mark = self.mark
        if mark is not None and mark.incarnation == fresh.incarnation:
            fresh = SpentMark(fresh.site, fresh.incarnation,
                              reserved=max(mark.reserved, fresh.committed),
                              committed=max(mark.committed, fresh.committed),
                              seqs={**mark.seqs, **{p: max(n, mark.seqs.get(p, 0))
                                                    for p, n in fresh.seqs.items()}})
        if fresh != mark:
            self._write_mark(fresh)

    def reserve_bundle_seq(self, peer: str) -> int:
        """The next bundle number to ``peer`` in this incarnation, reserved in the index
        and in the mark before the bundle is written: two bundles never share an id."""
        seq = self.index.reserve_bundle_seq(peer, self.stream.incarnation)
        self.settle()
        return seq

    def restored(self) -> bool:
        """Whether the index is older than the mark says this site has spent."""
        mark = self.mark
        if mark is None or mark.site != self.site_id:
            return False
        stream = self.stream
        if mark.incarnation != stream.incarnation:
            return mark.incarnation > stream.incarnation
        if self.index.last_counter() < mark.committed:
            return True
        seqs = self.index.bundle_seqs(stream.incarnation)
        return any(seqs.get(peer, 0) < n for peer, n in mark.seqs.items())

    def check_spent(self, *, now_ms: int) -> Stream | None:
        """At the start of a run: compare the index with the mark, and move to a new
        incarnation if the index was restored or emptied. Returns the new stream."""
        if not self.restored():
            if self.mark is None or self.mark.site != self.site_id or (
                    self.mark.incarnation < self.stream.incarnation
                    or self.index.last_counter() > self.mark.reserved):
                # No mark yet, or a mark older than the index (restored or lost on its
                # own): nothing can have been reused; take the index's word.
                self._write_mark(self._mark_from_index())
            return None
        assert self.mark is not None
        evidence = VersionVector.of({Stream(self.site_id, self.mark.incarnation):
                                     self.mark.reserved})
        with self.index.transaction():
            stream = self.reincarnate(keep_through=self.index.last_counter(),
                                      evidence=[evidence], now_ms=now_ms)
        self.settle()
        return stream

    def check_drop(self, drop: Path, *, now_ms: int) -> Stream | None:
        """Look for our own bundles in ``drop`` that this state does not remember
        writing: a later incarnation of ours, a bundle number above the one reserved
        for that peer, or an acknowledgement of more of our stream than we issued.

        Any of them means the home was restored (with its mark, so the mark could
        not tell); the site then moves to a new incarnation before it records or
        exports anything. Returns the new stream, if any.
        """
        from bundlesync.format.volumes import find_bundles  # noqa: PLC0415 - see below

        ours = self.stream
        issued = self.index.stream_max(ours)
        seqs = self.index.bundle_seqs(ours.incarnation)

        def evidence(bid: BundleId, recipients: Sequence[str], ack: VersionVector) -> bool:
            later = bid.incarnation > ours.incarnation
            reused = (bid.incarnation == ours.incarnation and len(recipients) == 1
                      and bid.seq > seqs.get(recipients[0], 0))
            return later or reused or detect_restore(ours, issued, ack)

        found: list[VersionVector] = []
        others = self.peer_name_prefixes()
        for path in find_bundles(drop):
            if self._left_alone_by_name(path, others):
                continue
            # Only the format layer can say more: loaded here, not for a drop whose
            # names settle everything (a no-change run).
            from bundlesync.format import (  # noqa: PLC0415
                BundleNotFound,
                list_bundle,
                verify_bundle,
            )
            try:
                listing = list_bundle(path)
                if listing.origin_site != self.site_id:
                    continue
                # The unverified header decides only to leave the file alone: a
                # genuine bundle reads the same verified, and a forged one fails
                # verification and is left alone anyway. Verifying only what could
                # be evidence spares reading every bundle of ours whole.
                if not evidence(listing.bundle_id, listing.recipients,
                                listing.header.ack if listing.header is not None
                                else VersionVector()):
                    continue
                # Evidence only under our own signature (bundle-v2 §2): an unsigned
                # file claiming to be ours must not move us to a new incarnation.
                with verify_bundle(path, trust=TrustedCards(), identity=self.identity,
                                   scratch=self.home) as verified:
                    header, clear = verified.header, verified.clear
            except (BundleRejected, BundleNotFound):
                continue  # not ours to judge here; the import reports it
            bid = header.bundle_id if header is not None else verified.bundle_id
            recipients = header.recipients if header is not None else (
                clear.recipients if clear is not None else ())
            # A version 2 bundle's acknowledgement is sealed to its recipient.
            ack = header.ack if header is not None else VersionVector()
            if evidence(bid, recipients, ack):
                found.append(ack)
                found.append(VersionVector.of({Stream(bid.site, bid.incarnation): 1}))
        if not found:
            return None
        with self.index.transaction():
            stream = self.reincarnate(keep_through=issued, evidence=found, now_ms=now_ms)
        self.settle()
        return stream

    def peer_name_prefixes(self) -> set[tuple[str, str]]:
        """(name, site id prefix) of every trusted peer, as its bundles' names start
        (bundle-v1 §11); a peer that shares this site's prefix is left out."""
        return {(card.own_name, card.site_id[:8]) for card in self.trust.list(verify=False)
                if card.site_id[:8] != self.site_id[:8]}

    def names_peer_bundle(self, name: str, prefixes: set[tuple[str, str]]) -> bool:
        """Whether ``name`` is a sync bundle's name as a trusted peer writes it."""
        parsed = parse_sync_name(name)
        return parsed is not None and (parsed.origin_name, parsed.site_prefix) in prefixes

    def remembered_bundle(self, path: Path) -> tuple[str, SentRow] | None:
        """The bundle this site recorded writing, if ``path`` is named as it and its
        volumes have the size recorded: (the recipient's site id, the record).
        Bundles are written under their final names only once complete, and never
        rewritten."""
        parsed = parse_sync_name(path.name)
        if parsed is None or (parsed.origin_name, parsed.site_prefix) != (
                self.name, self.site_id[:8]):
            return None
        for peer in self.index.bundle_seqs(parsed.incarnation):
            if peer.startswith(parsed.recipient_prefix):
                row = self.index.sent_bundle(peer, parsed.incarnation, parsed.seq)
                if row is not None and _size_on_disk(path) == row.size:
                    return peer, row
        return None

    def _left_alone_by_name(self, path: Path, others: set[tuple[str, str]]) -> bool:
        """Whether ``check_drop`` may pass over the file ``path`` without opening it.

        Two kinds of names: one of this site's own bundles that its state records
        having written -- that bundle is no evidence, it is what the state
        remembers -- and a sync bundle of a trusted peer, which is not ours. Only
        a deliberate rename of one of our bundles to such a name could hide
        evidence, which deleting the file would hide as well; a copy or a rename
        by hand ("x (1).bsb", "copy of ...") does not parse and is opened.
        """
        return (self.names_peer_bundle(path.name, others)
                or self.remembered_bundle(path) is not None)

    def reincarnate(self, *, keep_through: int, evidence: Sequence[VersionVector | DotSet],
                    now_ms: int) -> Stream:
        """Move to a new incarnation with the core's rules (``core.vv.reincarnate``),
        inside the caller's transaction.

        Our changes of the old stream above ``keep_through`` may share their dots with
        other changes peers hold: they are re-emitted under the new incarnation and
        forgotten under the old one, so the peers' versions can come back to us.
        """
        index = self.index
        ours = self.stream
        own = [decode_change(r) for r in index.stream_records_above(ours, keep_through)]
        # Every incarnation of ours in the log or the mark counts as evidence: never
        # reuse one.
        logged = VersionVector.of(dict(index.site_streams(ours.site)))
        step = reincarnate(stream=ours, own_changes=own, keep_through=keep_through,
                           evidence=[*evidence, logged], floor=now_ms // 1000)
        index.forget_stream_above(step.old_stream, step.keep_through)
        self._write_mark(SpentMark(self.site_id, step.stream.incarnation).reserve(
            len(step.reemitted)))
        index.start_incarnation(step.stream.incarnation)
        index.spend_counters(len(step.reemitted))
        for change in step.reemitted:
            fold_change(index, change)
        index.advance_streams([step.old_stream, step.stream])
        return step.stream

    def save_clock(self) -> None:
        last = self.clock.last
        if last is not None:
            self.index.save_clock(last.wall_ms, last.counter)


def _size_on_disk(first: Path) -> int | None:
    """The bytes of the bundle whose first volume is ``first`` (None: one is gone)."""
    try:
        return sum(volume.stat().st_size for volume in named_volumes(first))
    except OSError:
        return None


def open_store(location: str) -> Store:
    return MaildirStore(location)


def open_site(home: Path | None, *, store: Store | None = None) -> Site:
    """Open an initialised site (the caller holds :func:`site_lock`)."""
    paths = site_paths(home)
    config = read_config(paths.home / CONFIG_NAME)
    recorded = peek_identity(paths.keys)
    identity: SiteIdentity | None = None
    if recorded is None:
        identity = load_identity(paths.keys)
        site_id = identity.site_id
    else:
        site_id = recorded[1]
    trust = TrustStore(paths.peers)
    state = paths.home / STATE_NAME
    if state.exists() and state.stat().st_size == 0:
        # An empty file would be taken for a new database: this site would start
        # over at counter 1 of its first incarnation and reuse everything.
        raise StateError(
            f"the state index {state} is empty (0 bytes)",
            hint="Restore state.sqlite from a backup and keep spent.json as it is (the "
                 "restore is then detected and the site moves to a new incarnation), or "
                 "set the site up again in a new home with 'bundlesync init'.",
        )
    index = StateIndex(state)
    saved = index.clock()
    last = None if saved is None else Timestamp(saved[0], saved[1], site_id)
    clock = HybridClock(site_id, last)
    try:
        the_store = store if store is not None else open_store(config.store)
    except OSError as exc:  # pragma: no cover - the adapter translates its own errors
        raise StoreError(f"the store {config.store} cannot be opened: {exc}") from exc
    mark = read_mark(paths.home)
    if mark is not None and mark.site != site_id:
        # Another site's key in this home: its changes would be issued under that
        # site's ids and collide with its own (a key succession keeps the site id).
        index.close()
        raise ConfigError(
            f"the key in {paths.keys} belongs to site {site_id}, but this home's "
            f"records were made by site {mark.site}",
            hint="Put this site's own key files back in keys/. Never use another site's "
                 "key: two sites with one key would overwrite each other's changes.")
    site = Site(paths.home, config, paths.keys, trust, index, the_store, clock, mark,
                recorded=recorded, _identity=identity)
    # At the start of every run, before anything is recorded or exported: an index
    # older than what this site has spent was restored or emptied.
    site.check_spent(now_ms=time.time_ns() // 1_000_000)
    return site


def require_uninitialised(home: Path) -> None:
    if (home / CONFIG_NAME).exists():
        raise ConfigError(
            f"a site is already set up in {home}",
            hint="Use another --home, or remove that directory to start over.",
        )
