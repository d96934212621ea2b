"""Worked restore scenarios on the site model: detection from a peer's
acknowledgement, and a fork healed by the site that sees it."""

from __future__ import annotations

from bundlesync.core.model import FlagsChanged, MailboxRef, MessageAdded, MessageRef, Stream

from .sites import USER, Site, make_guid

NOW = 1_700_000_000_000


def sites() -> tuple[Site, Site, Site]:
    hq, a, b = Site("s0", 0), Site("s1", 0), Site("s2", 0)
    for site in (hq, a, b):
        site.initialise()
    return hq, a, b


def deliver(site: Site, key: str, now: int) -> MessageRef:
    folder = site.folders()[("INBOX",)].canonical
    ref = MessageRef(MailboxRef(USER, folder), key, make_guid("body", key))
    site.record([MessageAdded(ref, 10, 1, frozenset())], now)
    return ref


def exchange(hq: Site, *leaves: Site, rounds: int = 3, heal: bool = False) -> None:
    for _ in range(rounds):
        for leaf in leaves:
            hq.receive(leaf.export(hq.name), NOW, heal=heal)
        for leaf in leaves:
            leaf.receive(hq.export(leaf.name), NOW, heal=heal)


def test_a_restore_is_detected_from_a_peer_ack_and_lost_changes_come_back() -> None:
    hq, a, b = sites()
    exchange(hq, a, b)
    backup = a.copy()
    lost = deliver(a, "lost", NOW + 1000)
    hq.receive(a.export(hq.name), NOW + 2000)  # the change reached the relay...
    a = backup.copy()  # ...then a's state was restored from the backup, mark and all
    # a's first run imports; the relay's acknowledgement shows more of a's stream.
    bundle = hq.export(a.name)
    a.receive(bundle, NOW + 3000)
    assert a.start_after_restore(bundle.ack)
    assert a.stream == Stream("s1", 2)
    exchange(hq, a, b)
    fresh = deliver(a, "fresh", NOW + 4000)
    exchange(hq, a, b)
    for site in (hq, a, b):
        assert site.replica.messages[lost].alive
        assert site.replica.messages[fresh].alive
        assert site.replica == hq.replica
        site.check_store()
    assert {c.dot.stream for c in hq.log.values() if c.dot.site == "s1"} == {
        Stream("s1", 1), Stream("s1", 2)}


def test_a_reused_counter_is_healed_by_the_site_that_sees_the_fork() -> None:
    hq, a, b = sites()
    exchange(hq, a, b)
    backup = a.copy()
    old = deliver(a, "old", NOW + 1000)
    hq.receive(a.export(hq.name), NOW + 2000)
    a = backup.copy()  # restored with no evidence at all
    new = deliver(a, "new", NOW + 3000)  # reuses the counter of "old"
    assert a.log.keys() & hq.log.keys() >= {max(a.log)}
    hq.receive(a.export(hq.name), NOW + 4000, heal=True)
    assert hq.replica.messages[new].alive and hq.replica.messages[old].alive
    # Both contents now travel under the relay's own dots and reach everyone,
    # the restored site included.
    exchange(hq, a, b, heal=True)
    healed = len(hq.log)
    flagged = FlagsChanged(old, frozenset({"\\Seen"}))
    b.record([flagged], NOW + 5000)
    exchange(hq, a, b, heal=True)
    assert len(hq.log) == healed + 1, "a fork seen again was repaired again"
    for site in (hq, a, b):
        assert site.replica.messages[new].alive and site.replica.messages[old].alive
        assert "\\Seen" in site.replica.messages[old].effective_flags()
        assert site.replica == hq.replica
        site.check_store()
