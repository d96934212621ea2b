"""The merge is a join: any order, any grouping, any repetition, one result.

Checked for each register join and for the whole state with its resolved view.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bundlesync.core.merge import Replica
from bundlesync.core.model import Change, Dot, MailboxRef, MessageRef, Operation, Timestamp
from bundlesync.core.names import INBOX_PATH, ResolvedMailbox, resolve_mailboxes
from bundlesync.core.state import (
    MailboxState,
    MessageState,
    apply_to_mailbox,
    apply_to_message,
    empty_mailbox,
    empty_message,
    join_mailboxes,
    join_messages,
)

from .strategies import USERS, guid, histories, mailbox_ops_for, message_ops_for, timestamps

FIXED_MESSAGE = MessageRef(MailboxRef("u1", guid("m1")), "k1", "0" * 64)
FIXED_MAILBOX = MailboxRef("u1", guid("m1"))


def _fold_message(pairs: list[tuple[Timestamp, Operation]]) -> MessageState:
    state = empty_message(FIXED_MESSAGE)
    for n, (ts, op) in enumerate(pairs, 1):
        state = apply_to_message(state, Change(Dot(ts.site, 1, n), ts, op))
    return state


def _fold_mailbox(pairs: list[tuple[Timestamp, Operation]]) -> MailboxState:
    state = empty_mailbox(FIXED_MAILBOX)
    for n, (ts, op) in enumerate(pairs, 1):
        state = apply_to_mailbox(state, Change(Dot(ts.site, 1, n), ts, op))
    return state


message_states = st.lists(
    st.tuples(timestamps, message_ops_for(st.just(FIXED_MESSAGE))), max_size=6
).map(_fold_message)
mailbox_states = st.lists(
    st.tuples(timestamps, mailbox_ops_for(st.just(FIXED_MAILBOX))), max_size=6
).map(_fold_mailbox)


@given(message_states, message_states, message_states)
def test_message_join_is_commutative_associative_idempotent(
    a: MessageState, b: MessageState, c: MessageState
) -> None:
    assert join_messages(a, b) == join_messages(b, a)
    assert join_messages(join_messages(a, b), c) == join_messages(a, join_messages(b, c))
    assert join_messages(a, a) == a
    assert join_messages(a, empty_message(FIXED_MESSAGE)) == a


@given(mailbox_states, mailbox_states, mailbox_states)
def test_mailbox_join_is_commutative_associative_idempotent(
    a: MailboxState, b: MailboxState, c: MailboxState
) -> None:
    assert join_mailboxes(a, b) == join_mailboxes(b, a)
    assert join_mailboxes(join_mailboxes(a, b), c) == join_mailboxes(a, join_mailboxes(b, c))
    assert join_mailboxes(a, a) == a
    assert join_mailboxes(a, empty_mailbox(FIXED_MAILBOX)) == a


def views(replica: Replica) -> dict[str, dict[str, ResolvedMailbox]]:
    return {user: replica.resolve(user) for user in USERS}


@settings(max_examples=300)
@given(histories(), st.data())
def test_any_order_and_repetition_gives_one_state_and_one_view(
    changes: list[Change], data: st.DataObject
) -> None:
    reference = Replica.of(changes)
    shuffled = data.draw(st.permutations(changes))
    repeats = data.draw(st.lists(st.sampled_from(changes), max_size=10)) if changes else []
    other = Replica.of([*shuffled, *repeats])
    assert other == reference
    assert views(other) == views(reference)


@given(histories(), st.data())
def test_any_grouping_gives_one_state(changes: list[Change], data: st.DataObject) -> None:
    # Sites fold different subsets and then exchange states (a relay joins what
    # it got from two sites): the same as folding everything at once.
    cut_a = data.draw(st.integers(0, len(changes)))
    cut_b = data.draw(st.integers(0, len(changes)))
    left, right = Replica.of(changes[:cut_a]), Replica.of(changes[cut_b:])
    left.join(right)
    left.join(Replica.of(changes[min(cut_a, cut_b):max(cut_a, cut_b)]))
    assert left == Replica.of(changes)


@settings(max_examples=300)
@given(histories(max_size=40), st.data())
def test_resolved_tree_is_well_formed(changes: list[Change], data: st.DataObject) -> None:
    replica = Replica.of(changes)
    for user in USERS:
        boxes = {ref.guid: m for ref, m in replica.mailboxes.items() if ref.user == user}
        live = replica.live_mailboxes(user)
        resolved = resolve_mailboxes(boxes, live=live)
        # The mapping's order does not matter.
        flipped = dict(reversed(list(boxes.items())))
        assert resolve_mailboxes(flipped, live=sorted(live, reverse=True)) == resolved
        folders = [r for r in resolved.values() if r.has_folder]
        assert len({r.path for r in folders}) == len(folders), "two folders with one path"
        for r in resolved.values():
            assert r.path and all(r.path)
            if r.exists:
                head = resolved[r.canonical]
                assert head.has_folder and head.path == r.path
            if r.guid in live:
                assert r.exists, "a mailbox holding live mail must exist"
        for guid_, m in boxes.items():
            if m.name == "INBOX" and m.parent is None and not m.renamed and m.name_ts:
                assert resolved[guid_].path == INBOX_PATH and resolved[guid_].exists
