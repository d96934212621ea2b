"""Dot sets, acknowledgements, export selection, restores and forks."""

from __future__ import annotations

import pytest

from bundlesync.core.merge import Replica
from bundlesync.core.model import Change, Dot, Stream, VersionVector
from bundlesync.core.vv import (
    DotSet,
    changes_to_send,
    covers,
    detect_restore,
    merge_vectors,
    next_incarnation,
    reincarnate,
    sort_incoming,
)
from core.builders import add, create, msg

A1 = Stream("a", 1)
B1 = Stream("b", 1)


def dot(stream: Stream, n: int) -> Dot:
    return Dot(stream.site, stream.incarnation, n)


def test_dotset_holds_gaps_and_acknowledges_the_contiguous_prefix() -> None:
    dots = DotSet.of([dot(A1, 1), dot(A1, 2), dot(A1, 5), dot(B1, 2)])
    assert dot(A1, 5) in dots
    assert dot(A1, 3) not in dots
    assert dots.vector() == VersionVector.of({A1: 2})
    assert dots.max_counter(A1) == 5
    assert len(dots) == 4
    filled = dots.add(dot(A1, 3), dot(A1, 4), dot(B1, 1))
    assert filled.vector() == VersionVector.of({A1: 5, B1: 2})


def test_dotset_is_canonical_whatever_the_order_of_arrival() -> None:
    all_dots = [dot(A1, n) for n in (4, 1, 3, 2, 7)]
    one_by_one = DotSet()
    for d in all_dots:
        one_by_one = one_by_one.add(d)
    assert one_by_one == DotSet.of(reversed(all_dots))
    assert one_by_one.entries == ((A1, 4, (7,)),)
    assert sorted(one_by_one) == sorted(all_dots)
    with pytest.raises(ValueError, match="start at 1"):
        DotSet.of([dot(A1, 0)])


def test_dotset_merge_and_forget() -> None:
    left = DotSet.of([dot(A1, 1), dot(A1, 3)])
    right = DotSet.from_vector(VersionVector.of({A1: 2, B1: 1}))
    assert left.merge(right) == right.merge(left) == DotSet.of(
        [dot(A1, 1), dot(A1, 2), dot(A1, 3), dot(B1, 1)])
    assert left.merge(right).forget_above(A1, 1) == DotSet.of([dot(A1, 1), dot(B1, 1)])


def test_export_sends_what_the_peer_has_not_acknowledged_keeping_origin_dots() -> None:
    sample = create("INBOX", 0)
    changes = [Change(dot(s, n), sample.ts, sample.op) for s in (A1, B1) for n in (1, 2, 3)]
    ack = VersionVector.of({A1: 2})
    sent = changes_to_send(reversed(changes), ack)
    assert [c.dot for c in sent] == [dot(A1, 3), dot(B1, 1), dot(B1, 2), dot(B1, 3)]
    precise = DotSet.of([dot(A1, 1), dot(A1, 2), dot(B1, 3)])
    assert [c.dot for c in changes_to_send(changes, precise)] == [
        dot(A1, 3), dot(B1, 1), dot(B1, 2)]
    assert covers(ack, dot(A1, 2)) and not covers(precise, dot(B1, 1))


def test_merge_vectors_is_the_pointwise_maximum() -> None:
    assert merge_vectors(VersionVector.of({A1: 3}), VersionVector.of({A1: 1, B1: 2})) == (
        VersionVector.of({A1: 3, B1: 2}))


def test_restore_is_detected_when_a_peer_holds_more_of_our_stream() -> None:
    assert detect_restore(A1, 5, VersionVector.of({A1: 8}))
    assert not detect_restore(A1, 8, VersionVector.of({A1: 8}))
    assert not detect_restore(A1, 5, VersionVector.of({B1: 99}))
    # A later incarnation of our own site: our state predates it.
    assert detect_restore(A1, 5, VersionVector.of({Stream("a", 2): 1}))
    # An older incarnation is history, not a restore.
    assert not detect_restore(Stream("a", 2), 0, VersionVector.of({A1: 40}))
    # Incoming changes of ours we do not remember making prove it too.
    assert detect_restore(A1, 5, DotSet.of([dot(A1, 7)]))


def test_next_incarnation_is_above_all_evidence_and_the_floor() -> None:
    evidence = [VersionVector.of({Stream("a", 4): 2, Stream("b", 9): 1})]
    assert next_incarnation(A1, evidence) == Stream("a", 5)
    assert next_incarnation(A1, evidence, floor=1_700_000_000) == Stream("a", 1_700_000_000)
    assert next_incarnation(A1) == Stream("a", 2)


def test_reincarnation_reemits_doubtful_changes_as_no_ops_where_applied() -> None:
    m = msg("INBOX", "m1")
    log = [
        Change(dot(A1, 1), create("INBOX", 0).ts, create("INBOX", 0).op),
        Change(dot(A1, 2), add(m, 100).ts, add(m, 100).op),
        Change(dot(A1, 3), add(msg("INBOX", "m2"), 200).ts, add(msg("INBOX", "m2"), 200).op),
    ]
    step = reincarnate(stream=A1, own_changes=log, keep_through=1,
                       evidence=[VersionVector.of({A1: 9})])
    assert step.stream == Stream("a", 2)
    assert [c.dot for c in step.reemitted] == [Dot("a", 2, 1), Dot("a", 2, 2)]
    assert [(c.ts, c.op) for c in step.reemitted] == [(c.ts, c.op) for c in log[1:]]
    applied = Replica.of(log)
    again = applied.copy()
    again.apply_all(step.reemitted)
    assert again == applied
    nothing = reincarnate(stream=A1, own_changes=log, keep_through=3)
    assert nothing.reemitted == ()


def test_intake_sorts_new_duplicate_and_forked_changes() -> None:
    m = msg("INBOX", "m1")
    held_change = Change(dot(A1, 1), add(m, 100).ts, add(m, 100).op)
    forked = Change(dot(A1, 1), add(m, 150).ts, add(m, 150).op)
    fresh = Change(dot(A1, 2), add(m, 200).ts, add(m, 200).op)
    held = {held_change.dot: held_change}
    intake = sort_incoming([fresh, held_change, forked, fresh], held=held.get)
    assert intake.new == (fresh,)
    assert intake.duplicates == 2
    assert intake.forks == ((held_change, forked),)
