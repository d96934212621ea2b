"""Three to five sites replicating through a relay over a lossy transport.

Site ``s0`` is the relay (headquarters); every other site exchanges bundles
with it only, so changes between two leaves always travel A -> HQ -> B with
their origin dots. Each site makes local changes (deliver, flag, keyword,
expunge, move, create/rename/delete mailbox, subscribe) with its own clock
(some are hours or a day off). Bundles are exported from what the peer last
acknowledged and are dropped, duplicated, delayed and delivered out of order.
A site may be restored from an old copy of itself (state and store).

After every full exchange the test checks, against a reference model kept
here (which message instances were added, which expunged, and which adds each
expunge had seen):

* every site holds the same change log (one change per dot: no counter was
  ever reused), the same registers and the same resolved mailbox tree;
* every site's store equals its state (the plans were applied one by one);
* every instance added and never expunged is alive everywhere, in an existing
  mailbox, and nothing expunged after all its adds came back;
* re-importing any bundle still in transit changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from bundlesync.core.merge import Replica
from bundlesync.core.model import (
    Change,
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRef,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Operation,
    SubscriptionSet,
    Timestamp,
    VersionVector,
)
from bundlesync.core.names import INBOX_PATH, ResolvedMailbox

from .conftest import machine_settings
from .sites import USER, Bundle, Marker, Site, expunge_file, make_guid

NAMES = ("Sent", "Work", "Lists", "Old", "inbox")
FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "$Work", "Later")
SKEWS = (0, 0, 0, -3_600_000, 86_400_000)


class Replication(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_700_000_000_000
        self.sites: list[Site] = []
        self.transit: list[Bundle] = []
        self.backups: dict[int, Site] = {}
        self.markers: dict[str, Marker] = {}
        self.seen_by_expunge: dict[Change, frozenset[Timestamp]] = {}
        self.serial = 0

    # --- set-up ------------------------------------------------------------------
    @initialize(count=st.integers(3, 5), skews=st.lists(st.sampled_from(SKEWS), min_size=5,
                                                         max_size=5))
    def start(self, count: int, skews: list[int]) -> None:
        for n in range(count):
            site = Site(f"s{n}", skews[n])
            site.initialise()
            self.sites.append(site)
            self.markers[site.name] = site.marker()

    def site(self, index: int) -> Site:
        return self.sites[index % len(self.sites)]

    def fresh(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}{self.serial}"

    def record(self, site: Site, ops: list[Operation], *, one_timestamp: bool = False) -> None:
        if not ops:
            return
        for change in site.record(ops, self.now, one_timestamp=one_timestamp):
            if isinstance(change.op, MessageExpunged):
                self.seen_by_expunge[change] = site.seen_adds(change.op.message)
        self.markers[site.name] = site.marker(self.markers[site.name])

    # --- time ----------------------------------------------------------------------
    @rule(ms=st.integers(1, 600_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    # --- local changes -----------------------------------------------------------------
    @rule(index=st.integers(0, 4), data=st.data())
    def deliver(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        folder = data.draw(st.sampled_from(sorted(site.folders().values(), key=lambda r: r.path)))
        flags = data.draw(st.frozensets(st.sampled_from(FLAGS), max_size=2))
        key = self.fresh("m")
        ref = MessageRef(_box(folder.canonical), key, make_guid("body", key))
        self.record(site, [MessageAdded(ref, 100, self.now // 1000, flags)])

    @rule(index=st.integers(0, 4), data=st.data())
    def change_flag(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        files = site.files()
        if not files:
            return
        key = data.draw(st.sampled_from(sorted(files)))
        flag = data.draw(st.sampled_from(FLAGS))
        on = data.draw(st.booleans())
        target = files[key][-1].ref  # the representative instance
        change = FlagsChanged(target, frozenset({flag}) if on else frozenset(),
                              frozenset() if on else frozenset({flag}))
        self.record(site, [change])

    @rule(index=st.integers(0, 4), data=st.data())
    def expunge(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        files = site.files()
        if files:
            self.record(site, expunge_file(site, data.draw(st.sampled_from(sorted(files)))))

    @rule(index=st.integers(0, 4), data=st.data())
    def move(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        files = site.files()
        if not files:
            return
        key = data.draw(st.sampled_from(sorted(files)))
        folders = site.folders()
        target = folders[data.draw(st.sampled_from(sorted(folders)))]
        if target.path == key[0]:
            return
        if any(k[0] == target.path and k[1:] == key[1:] for k in files):
            return
        states = files[key]
        flags = frozenset().union(*(s.effective_flags() for s in states))
        added = MessageAdded(MessageRef(_box(target.canonical), key[1], key[2]),
                             states[-1].size, states[-1].internal_date, flags)
        self.record(site, [added, *expunge_file(site, key)])

    @rule(index=st.integers(0, 4), data=st.data())
    def create_mailbox(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        folders = site.folders()
        parent = data.draw(st.none() | st.sampled_from(sorted(folders)))
        name = data.draw(st.sampled_from(NAMES))
        path = (parent or ()) + (name,)
        if _taken(folders, path):
            return
        guid = make_guid("box", self.fresh("b"))
        parent_guid = folders[parent].canonical if parent else None
        self.record(site, [MailboxCreated(_box(guid), parent_guid, name, self.now // 1000)])

    @rule(index=st.integers(0, 4), data=st.data())
    def rename_mailbox(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        folders = site.folders()
        movable = sorted(p for p in folders if p != INBOX_PATH)
        if not movable:
            return
        source = data.draw(st.sampled_from(movable))
        parent = data.draw(st.none() | st.sampled_from(sorted(folders)))
        if parent is not None and parent[: len(source)] == source:
            return  # not into its own subtree (IMAP refuses it)
        name = data.draw(st.sampled_from(NAMES))
        path = (parent or ()) + (name,)
        if _taken(folders, path):
            return
        parent_guid = folders[parent].canonical if parent else None
        group = site.members(folders[source].canonical)
        ops: list[Operation] = [MailboxRenamed(_box(g), parent_guid, name) for g in group]
        self.record(site, ops, one_timestamp=True)
        # The members stay one folder (its path may differ from ``path`` when the
        # rename ends a name conflict elsewhere and a suffix goes away).
        view = site.view()
        assert len({view[g].canonical for g in group}) == 1
        assert all(view[g].exists for g in group)

    @rule(index=st.integers(0, 4), data=st.data())
    def delete_mailbox(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        folders = site.folders()
        deletable = sorted(p for p in folders if p != INBOX_PATH)
        if not deletable:
            return
        path = data.draw(st.sampled_from(deletable))
        ops: list[Operation] = []
        for key in sorted(site.files()):
            if key[0] == path:
                ops.extend(expunge_file(site, key))
        ops.extend(MailboxDeleted(_box(g)) for g in site.members(folders[path].canonical))
        self.record(site, ops)

    @rule(index=st.integers(0, 4), data=st.data())
    def subscribe(self, index: int, data: st.DataObject) -> None:
        site = self.site(index)
        folders = site.folders()
        path = data.draw(st.sampled_from(sorted(folders)))
        on = data.draw(st.booleans())
        self.record(site, [SubscriptionSet(_box(g), on)
                           for g in site.members(folders[path].canonical)])

    # --- transport -----------------------------------------------------------------------
    @rule(index=st.integers(1, 4), inbound=st.booleans())
    def export(self, index: int, inbound: bool) -> None:
        leaf = self.site(max(1, index % len(self.sites)))
        hq = self.sites[0]
        src, dst = (leaf, hq) if inbound else (hq, leaf)
        self.transit.append(src.export(dst.name))

    def _deliver(self, bundle: Bundle) -> None:
        site = next(s for s in self.sites if s.name == bundle.dst)
        site.receive(bundle, self.now)

    @precondition(lambda self: self.transit)
    @rule(data=st.data())
    def deliver_bundle(self, data: st.DataObject) -> None:
        self._deliver(self.transit.pop(data.draw(st.integers(0, len(self.transit) - 1))))

    @precondition(lambda self: self.transit)
    @rule(data=st.data())
    def deliver_duplicate(self, data: st.DataObject) -> None:
        self._deliver(self.transit[data.draw(st.integers(0, len(self.transit) - 1))])

    @precondition(lambda self: self.transit)
    @rule(data=st.data())
    def lose_bundle(self, data: st.DataObject) -> None:
        self.transit.pop(data.draw(st.integers(0, len(self.transit) - 1)))

    # --- restores -------------------------------------------------------------------------
    @rule(index=st.integers(0, 4))
    def back_up(self, index: int) -> None:
        self.backups[index % len(self.sites)] = self.site(index).copy()

    @precondition(lambda self: self.backups)
    @rule(data=st.data())
    def restore_from_backup(self, data: st.DataObject) -> None:
        position = data.draw(st.sampled_from(sorted(self.backups)))
        restored = self.backups[position].copy()
        marker = self.markers[restored.name]
        lost = marker.used.get_count(restored.stream) > restored.counter
        counter = restored.counter
        moved = restored.start_after_restore(marker.used, marker.last)
        assert moved or not lost
        assert not moved or len(restored.log) == len(self.backups[position].log), (
            "detected before any new change: nothing re-emitted, nothing forgotten")
        assert restored.counter == (0 if moved else counter)
        # The restored site will never issue a counter it had used before.
        assert marker.used.get_count(restored.stream) <= restored.counter
        self.sites[position] = restored
        self.markers[restored.name] = restored.marker(marker)

    # --- full exchange and the checks -------------------------------------------------------
    @rule()
    def full_exchange(self) -> None:
        self.exchange_until_quiet()
        self.check_converged()

    def exchange_until_quiet(self) -> None:
        """Reliable rounds leaves -> HQ -> leaves until nothing moves and no
        acknowledgement changes (a restored site's lower ack must travel first)."""
        hq, leaves = self.sites[0], self.sites[1:]
        for _ in range(6):
            acks = [dict(s.acks) for s in self.sites]
            moved = 0
            for leaf in leaves:
                moved += len(hq.receive(leaf.export(hq.name), self.now))
            for leaf in leaves:
                moved += len(leaf.receive(hq.export(leaf.name), self.now))
            if not moved and acks == [s.acks for s in self.sites]:
                return
        raise AssertionError("a full exchange did not settle")

    def check_converged(self) -> None:
        first = self.sites[0]
        view = first.view()
        for site in self.sites[1:]:
            assert site.log == first.log, "two sites hold different changes"
            assert site.replica == first.replica, "two sites hold different registers"
            assert site.view() == view, "two sites resolve different trees"
        for site in self.sites:
            site.check_store()
            assert Replica.of(site.log.values()) == site.replica, "re-applying changed it"
        self.check_truth(first)
        # Bundles still on the way may carry changes nobody else holds (made
        # by a site that was then restored); what they share must be identical.
        for bundle in self.transit:
            site = next(s for s in self.sites if s.name == bundle.dst)
            assert all(site.log.get(c.dot, c) == c for c in bundle.changes), "a reused dot"
        # Re-importing everything a leaf ever sent changes nothing at the relay.
        hq = first.copy()
        for leaf in self.sites[1:]:
            everything = leaf.export(hq.name, ack=VersionVector())
            assert len(everything.changes) == len(leaf.log)
            assert hq.receive(everything, self.now) == []
        assert hq.replica == first.replica and hq.store.snapshot() == first.store.snapshot()

    def check_truth(self, site: Site) -> None:
        adds: dict[MessageRef, set[Timestamp]] = {}
        expunges: dict[MessageRef, list[Change]] = {}
        for change in site.log.values():
            if isinstance(change.op, MessageAdded):
                adds.setdefault(change.op.message, set()).add(change.ts)
            elif isinstance(change.op, MessageExpunged):
                expunges.setdefault(change.op.message, []).append(change)
        view = site.view()
        for ref, add_times in adds.items():
            state = site.replica.messages[ref]
            if ref not in expunges:
                assert state.alive, f"{ref} was added, never expunged, and is gone"
                assert view[ref.mailbox.guid].exists
            else:
                seen = set().union(*(self.seen_by_expunge.get(x, frozenset())
                                     for x in expunges[ref]))
                if add_times <= seen:
                    assert not state.alive, f"{ref} was expunged and came back"

    def teardown(self) -> None:
        if self.sites:
            self.exchange_until_quiet()
            self.check_converged()

    @invariant()
    def no_inbox_is_ever_lost(self) -> None:
        for site in self.sites:
            assert INBOX_PATH in site.folders()


def _box(guid: str) -> MailboxRef:
    return MailboxRef(USER, guid)


def _taken(folders: Mapping[tuple[str, ...], ResolvedMailbox], path: tuple[str, ...]) -> bool:
    """Whether IMAP would refuse to create or rename to ``path`` at this site."""
    if len(path) == 1 and path[0].upper() == "INBOX":
        return True
    return path in folders


Replication.TestCase.settings = machine_settings("model")
TestReplication = pytest.mark.slow(Replication.TestCase)
