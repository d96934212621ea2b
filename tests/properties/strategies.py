"""Hypothesis strategies for changes over a deliberately tiny universe.

Few sites, few mailboxes, few message GUIDs and a handful of wall-clock values,
so that generated histories are full of ties, collisions, cycles and
same-name mailboxes -- the cases the rules exist for.
"""

from __future__ import annotations

import hashlib

from hypothesis import strategies as st

from bundlesync.core.model import (
    Change,
    Dot,
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
)

USERS = ("u1", "u2")
SITES = ("a", "b", "c")
BOX_LABELS = ("inbox", "m1", "m2", "m3", "m4")
NAMES = ("INBOX", "Sent", "Work", "Sent", "inbox", "A/B")
FLAG_NAMES = ("\\Seen", "\\Flagged", "$Work")
KEYS = ("k1", "k2", "k3")
BODIES = ("x", "y")


def guid(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:32]


def body(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


users = st.sampled_from(USERS)
sites = st.sampled_from(SITES)
timestamps = st.builds(Timestamp, st.integers(0, 6), st.integers(0, 1), sites)
mailbox_refs = st.builds(MailboxRef, users, st.sampled_from(BOX_LABELS).map(guid))
parents = st.none() | st.sampled_from(BOX_LABELS).map(guid)
message_refs = st.builds(
    MessageRef, mailbox_refs, st.sampled_from(KEYS), st.sampled_from(BODIES).map(body)
)
flag_sets = st.frozensets(st.sampled_from(FLAG_NAMES), max_size=3)



def mailbox_ops_for(refs: st.SearchStrategy[MailboxRef]) -> st.SearchStrategy[Operation]:
    return st.one_of(
        st.builds(MailboxCreated, refs, parents, st.sampled_from(NAMES),
                  st.integers(1, 3), st.none() | st.just("\\Sent")),
        st.builds(MailboxRenamed, refs, parents, st.sampled_from(NAMES)),
        st.builds(MailboxDeleted, refs),
        st.builds(SubscriptionSet, refs, st.booleans()),
    )


def message_ops_for(refs: st.SearchStrategy[MessageRef]) -> st.SearchStrategy[Operation]:
    return st.one_of(
        st.builds(MessageAdded, refs, st.integers(1, 3), st.integers(1, 3), flag_sets),
        st.builds(MessageExpunged, refs),
        st.builds(FlagsChanged, refs, flag_sets, flag_sets),
    )


mailbox_ops = mailbox_ops_for(mailbox_refs)
message_ops = message_ops_for(message_refs)
operations = st.one_of(mailbox_ops, message_ops)


@st.composite
def histories(draw: st.DrawFn, *, max_size: int = 30) -> list[Change]:
    """A list of changes with distinct dots (dots do not take part in the merge)."""
    pairs = draw(st.lists(st.tuples(timestamps, operations), max_size=max_size))
    return [Change(Dot(ts.site, 1, n), ts, op) for n, (ts, op) in enumerate(pairs, 1)]
