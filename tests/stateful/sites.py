"""A model of bundlesync sites built on the pure core, for the stateful test.

Each site has what a real site has -- a change log keyed by dot, the applied
dots, the registers, a hybrid clock, the peers' latest acknowledgements and a
store -- and does what the operations do, in the same words: record a local
change, export what a peer has not acknowledged, import a bundle (intake,
fold, plan, apply to the store), detect a restore and reincarnate. The store is
the strict fake store: every merge is applied to it through the plans, so
the test also checks that the plans keep a store equal to the state.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from core.builders import merge_plan
from core.fakestore import FakeStore, projection

from bundlesync.core.hlc import HybridClock
from bundlesync.core.merge import Replica
from bundlesync.core.model import (
    Change,
    Dot,
    MailboxCreated,
    MailboxRef,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Operation,
    Stream,
    Timestamp,
    VersionVector,
    derived_mailbox_guid,
)
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.state import MessageState, inventory_timestamp
from bundlesync.core.vv import (
    DotSet,
    changes_to_send,
    detect_restore,
    merge_vectors,
    reemit,
    reincarnate,
    sort_incoming,
)

USER = "user@example.org"
FolderPath = tuple[str, ...]


def make_guid(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def seed_changes() -> list[Operation]:
    """The store every site was initialised on (copies of one store)."""
    inbox = MailboxRef(USER, derived_mailbox_guid(USER, ("INBOX",)))
    archive = MailboxRef(USER, derived_mailbox_guid(USER, ("Archive",)))
    return [
        MailboxCreated(inbox, None, "INBOX", 1000),
        MailboxCreated(archive, None, "Archive", 1001),
        MessageAdded(MessageRef(inbox, "seed1", make_guid("b1")), 10, 1, frozenset({"\\Seen"})),
        MessageAdded(MessageRef(archive, "seed2", make_guid("b2")), 20, 2, frozenset()),
    ]


@dataclass(frozen=True, slots=True)
class Bundle:
    src: str
    dst: str
    changes: tuple[Change, ...]
    ack: VersionVector


@dataclass(frozen=True, slots=True)
class Marker:
    """The high-water mark a site keeps outside its state (it survives a restore):
    the highest counter it used in each of its incarnations, and its clock."""

    used: VersionVector
    last: Timestamp


class Site:
    def __init__(self, name: str, skew_ms: int) -> None:
        self.name = name
        self.skew_ms = skew_ms
        self.stream = Stream(name, 1)
        self.counter = 0
        self.clock = HybridClock(name)
        self.log: dict[Dot, Change] = {}
        self.applied = DotSet()
        self.replica = Replica()
        self.acks: dict[str, VersionVector] = {}
        self.store = FakeStore()
        self.reincarnations = 0

    def copy(self) -> Site:
        """A copy of the whole site (state and store), as a backup would hold it."""
        clone = Site(self.name, self.skew_ms)
        clone.stream, clone.counter = self.stream, self.counter
        clone.clock = HybridClock(self.name, self.clock.last)
        clone.log = dict(self.log)
        clone.applied = self.applied
        clone.replica = self.replica.copy()
        clone.acks = dict(self.acks)
        clone.store = copy.deepcopy(self.store)
        clone.reincarnations = self.reincarnations
        return clone

    # --- the local view ---------------------------------------------------------
    def view(self) -> dict[str, ResolvedMailbox]:
        return self.replica.resolve(USER)

    def folders(self) -> dict[FolderPath, ResolvedMailbox]:
        return {r.path: r for r in self.view().values() if r.has_folder}

    def members(self, canonical: str) -> list[str]:
        return sorted(g for g, r in self.view().items() if r.exists and r.canonical == canonical)

    def files(self) -> dict[tuple[FolderPath, str, str], list[MessageState]]:
        """Alive instances grouped by the file that holds them."""
        view = self.view()
        result: dict[tuple[FolderPath, str, str], list[MessageState]] = {}
        for ref, state in sorted(self.replica.messages.items()):
            if state.alive:
                path = view[view[ref.mailbox.guid].canonical].path
                result.setdefault((path, ref.guid, ref.body), []).append(state)
        return result

    def seen_adds(self, ref: MessageRef) -> frozenset[Timestamp]:
        return frozenset(
            c.ts for c in self.log.values()
            if isinstance(c.op, MessageAdded) and c.op.message == ref
        )

    # --- changing -----------------------------------------------------------------
    def initialise(self) -> None:
        """Inventory of the seed store at the inventory timestamp (design rule 9)."""
        ts = inventory_timestamp(self.name)
        self._record_all([(ts, op) for op in seed_changes()])

    def record(self, ops: Iterable[Operation], now_ms: int, *,
               one_timestamp: bool = False) -> list[Change]:
        """Record local changes; ``one_timestamp`` for one operation on several
        registers (a merged folder renamed: one rename per member)."""
        if one_timestamp:
            ts = self.clock.tick(now_ms + self.skew_ms)
            return self._record_all([(ts, op) for op in ops])
        return self._record_all([(self.clock.tick(now_ms + self.skew_ms), op) for op in ops])

    def _record_all(self, stamped: list[tuple[Timestamp, Operation]]) -> list[Change]:
        made = []
        for ts, op in stamped:
            self.counter += 1
            made.append(Change(Dot(self.name, self.stream.incarnation, self.counter), ts, op))
        self._merge(made)
        return made

    def marker(self, previous: Marker | None = None) -> Marker:
        used = VersionVector.of({self.stream: self.counter})
        if previous is not None:
            used = merge_vectors(previous.used, used)
        return Marker(used, self.clock.last)

    def _merge(self, changes: list[Change]) -> None:
        before = self.replica.copy()
        for change in changes:
            self.log[change.dot] = change
            self.replica.apply(change)
        self.applied = self.applied.merge(DotSet.of(c.dot for c in changes))
        plan, messages = merge_plan(before, self.replica, user=USER)
        self.store.apply_merge(plan, messages)

    # --- exchanging ---------------------------------------------------------------
    def export(self, peer: str, *, ack: VersionVector | None = None) -> Bundle:
        """What the peer has not acknowledged (``ack`` overrides its latest ack)."""
        if ack is None:
            ack = self.acks.get(peer, VersionVector())
        return Bundle(self.name, peer, tuple(changes_to_send(self.log.values(), ack)),
                      self.applied.vector())

    def receive(self, bundle: Bundle, now_ms: int, *, heal: bool = False) -> list[Change]:
        """Import a bundle; returns the changes that were new here.

        A fork (one dot, two contents) means some site reused a counter: never,
        with restores detected at start-up from the high-water mark. With
        ``heal``, a fork is repaired as the core prescribes instead: the
        incoming content is applied too, and both are re-emitted under our dots.
        """
        assert bundle.dst == self.name
        intake = sort_incoming(bundle.changes, held=self.log.get)
        if not heal:
            assert intake.forks == (), intake.forks
        for change in bundle.changes:
            self.clock.observe(change.ts, now_ms + self.skew_ms)
        if intake.new:
            self._merge(list(intake.new))
        if intake.forks:
            # Re-issue each content of a forked dot that we do not hold under a
            # dot of its own yet, so a fork seen twice is repaired once.
            own_dot = {(c.ts, c.op): d for d, c in self.log.items()}
            both = []
            for held, incoming in intake.forks:
                for change in (held, incoming):
                    dot = own_dot.get((change.ts, change.op))
                    if (dot is None or dot == change.dot) and change not in both:
                        both.append(change)
            healed = reemit(both, self.stream, self.counter + 1)
            self.counter += len(healed)
            if healed:
                self._merge(healed)
        # Replace, never merge: a restored peer's acknowledgement goes down.
        self.acks[bundle.src] = bundle.ack
        return list(intake.new)

    # --- restores -----------------------------------------------------------------
    def start_after_restore(
        self, evidence: VersionVector | DotSet, last: Timestamp | None = None,
        *, keep_through: int | None = None,
    ) -> bool:
        """Compare the state with evidence of what we made; reincarnate if it is older.

        ``keep_through`` defaults to the restored counter: right for a restore
        detected before any new change was made.
        """
        if not detect_restore(self.stream, self.counter, evidence):
            return False
        if last is not None:
            self.clock.observe(last, last.wall_ms)
        step = reincarnate(
            stream=self.stream,
            own_changes=[c for c in self.log.values() if c.dot.stream == self.stream],
            keep_through=self.counter if keep_through is None else keep_through,
            evidence=[evidence],
        )
        for old in [d for d in self.log if d.stream == step.old_stream
                    and d.counter > step.keep_through]:
            del self.log[old]
        self.applied = self.applied.forget_above(step.old_stream, step.keep_through)
        self.stream = step.stream
        self.counter = 0
        self.reincarnations += 1
        if step.reemitted:
            self.counter = len(step.reemitted)
            self._merge(list(step.reemitted))
        return True

    def check_store(self) -> None:
        assert self.store.snapshot() == projection(self.replica, USER)


def expunge_file(site: Site, key: tuple[FolderPath, str, str]) -> list[Operation]:
    """Expunging a file expunges every instance it holds."""
    return [MessageExpunged(s.ref) for s in site.files()[key]]
