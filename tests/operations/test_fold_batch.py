"""Folding a bundle's changes in batches gives what folding them one by one gives.

``fold_new`` reads the states a batch touches with one statement per mailbox and
writes them, their pending marks and the log's rows with one statement each; the
registers, the pending marks, the log and the changes reported as superseded must
be those of ``fold_change`` called once per change, in the same order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bundlesync.core.model import (
    Change,
    Dot,
    FlagsChanged,
    MailboxRef,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Timestamp,
)
from bundlesync.core.state import register_key
from bundlesync.operations.ledger import fold_change, fold_new
from bundlesync.state.index import StateIndex
from tests.properties.strategies import USERS, body, guid, message_ops, operations, timestamps


@st.composite
def busy_histories(draw: st.DrawFn) -> list[Change]:
    """Changes with distinct dots, mostly to a few messages (a batch meets the same
    message several times)."""
    ops = st.one_of(message_ops, message_ops, operations)
    pairs = draw(st.lists(st.tuples(timestamps, ops), min_size=8, max_size=40))
    return [Change(Dot(ts.site, 1, n), ts, op) for n, (ts, op) in enumerate(pairs, 1)]


def _snapshot(index: StateIndex, changes: list[Change]) -> dict[str, Any]:
    messages = {}
    for change in changes:
        key = register_key(change.op)
        if isinstance(key, MessageRef):
            messages[key] = index.load_message(key.mailbox.user, key.mailbox.guid, key.guid,
                                               key.body)
    return {
        "messages": messages,
        "mailboxes": {user: sorted(index.user_mailboxes(user)) for user in USERS},
        "pending": {user: index.pending_messages(user) for user in USERS},
        "pending users": index.pending_users(),
        "live": {user: index.live_mailboxes(user) for user in USERS},
        "log": index.count_changes(),
    }


@settings(max_examples=30, deadline=None)
@given(history=busy_histories(), cut=st.integers(2, 40), data=st.data())
def test_a_batch_folds_as_the_changes_one_by_one(history: list[Change], cut: int,
                                                 data: st.DataObject) -> None:
    # Some changes folded already, so a batch meets states the index holds.
    before = data.draw(st.integers(0, len(history) // 2))
    check_batch_folds_as_one_by_one(history, before=before, cut=cut)


def test_changes_to_one_message_in_one_batch_build_on_each_other() -> None:
    ref = MessageRef(MailboxRef(USERS[0], guid("inbox")), "k1", body("x"))
    history = [
        Change(Dot("a", 1, 1), Timestamp(1, 0, "a"), MessageAdded(ref, 1, 1, frozenset())),
        Change(Dot("a", 1, 2), Timestamp(2, 0, "a"), FlagsChanged(ref, frozenset({"\\Seen"}),
                                                                  frozenset())),
        Change(Dot("b", 1, 3), Timestamp(1, 0, "b"), FlagsChanged(ref, frozenset(),
                                                                  frozenset({"\\Seen"}))),
        Change(Dot("b", 1, 4), Timestamp(3, 0, "b"), MessageExpunged(ref)),
        Change(Dot("c", 1, 5), Timestamp(0, 0, "c"), MessageAdded(ref, 1, 1, frozenset())),
    ]
    for before in (0, 1):
        check_batch_folds_as_one_by_one(history, before=before, cut=len(history))


def check_batch_folds_as_one_by_one(history: list[Change], *, before: int, cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one = StateIndex(Path(tmp) / "one.sqlite", create=True)
        many = StateIndex(Path(tmp) / "many.sqlite", create=True)
        lost_one: list[tuple[str, str]] = []
        lost_many: list[tuple[str, str]] = []
        with one, many, one.transaction(), many.transaction():
            for change in history[:before]:
                fold_change(one, change, record=b"r", unknown=True)
                fold_change(many, change, record=b"r", unknown=True)
            for change in history[before:]:
                fold_change(one, change, record=b"r", superseded=lambda *k: lost_one.append(k),
                            unknown=True)
            rest = [(change, b"r") for change in history[before:]]
            for start in range(0, len(rest), cut):
                fold_new(many, rest[start:start + cut],
                         superseded=lambda *k: lost_many.append(k))
            print(len(history), before, cut, _snapshot(many, history) == _snapshot(one, history))
            assert _snapshot(many, history) == _snapshot(one, history)
        assert lost_many == lost_one
