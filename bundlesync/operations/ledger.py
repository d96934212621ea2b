"""Folding changes into the state index: the one path every change takes.

A change, local (from a scan) or remote (from a bundle), is logged once by its
dot, folded into the register it touches with the core's pure merge, and the
key it touched is marked *pending*: the apply step (``operations.apply``) then
brings the store in line with the registers. Logging, folding and marking
happen in the caller's transaction, so a crash leaves either all or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bundlesync.core.model import (
    Change,
    FlagsChanged,
    MailboxRef,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    MessageRef,
    Operation,
    Stream,
    SubscriptionSet,
)
from bundlesync.core.names import ResolvedMailbox, resolve_mailboxes
from bundlesync.core.state import (
    MailboxState,
    MessageState,
    apply_to_mailbox,
    apply_to_message,
    register_key,
)
from bundlesync.state.codec import (
    decode_mailbox,
    decode_message,
    encode_mailbox,
    encode_message,
)
from bundlesync.state.index import StateIndex

# Changes folded together by fold_new: their states read and written with one
# statement per mailbox and batch.
FOLD_BATCH = 500


def load_message(index: StateIndex, ref: MessageRef) -> MessageState | None:
    blob = index.load_message(ref.mailbox.user, ref.mailbox.guid, ref.guid, ref.body)
    return None if blob is None else decode_message(ref, blob)


def load_mailbox(index: StateIndex, ref: MailboxRef) -> MailboxState | None:
    blob = index.load_mailbox(ref.user, ref.guid)
    return None if blob is None else decode_mailbox(ref, blob)


def user_mailboxes(index: StateIndex, user: str) -> dict[str, MailboxState]:
    return {
        guid: decode_mailbox(MailboxRef(user, guid), blob)
        for guid, blob in index.user_mailboxes(user)
    }


def resolve_user(index: StateIndex, user: str) -> dict[str, ResolvedMailbox]:
    """The user's mailbox tree as the merged state says it should be."""
    return resolve_mailboxes(user_mailboxes(index, user), live=index.live_mailboxes(user))


def _message_change_lost(op: Operation, state: MessageState) -> bool:
    """Whether a change that left the register as it was wanted something else."""
    if isinstance(op, MessageAdded):
        return not state.alive  # stays expunged
    if isinstance(op, MessageExpunged):
        return state.alive  # a later re-add won
    if isinstance(op, FlagsChanged) and state.alive:
        flags = state.effective_flags()
        return bool(op.added - flags) or bool(op.removed & flags)
    return False


def _mailbox_change_lost(op: Operation, state: MailboxState) -> bool:
    if isinstance(op, MailboxRenamed):
        return (state.parent, state.name) != (op.parent, op.name)
    if isinstance(op, SubscriptionSet):
        return state.subscribed != op.subscribed
    return False


def fold_changes(index: StateIndex, changes: Sequence[Change]) -> int:
    """Log and fold changes just made under this site's stream; how many were new.

    Their dots are checked against the log in one range query per stream (a
    scan records hundreds of changes; one lookup each was a statement per change).
    """
    known: dict[Stream, set[int]] = {}
    for stream, counters in _counters_by_stream(changes).items():
        known[stream] = index.known_counters(stream, min(counters), max(counters))
    new = [(change, None) for change in changes
           if change.dot.counter not in known[change.dot.stream]]
    for start in range(0, len(new), FOLD_BATCH):
        fold_new(index, new[start:start + FOLD_BATCH])
    return len(new)


def _counters_by_stream(changes: Sequence[Change]) -> dict[Stream, list[int]]:
    found: dict[Stream, list[int]] = {}
    for change in changes:
        found.setdefault(change.dot.stream, []).append(change.dot.counter)
    return found


def fold_change(index: StateIndex, change: Change, *, record: bytes | None = None,
                superseded: Callable[[str, str], None] | None = None,
                unknown: bool = False) -> bool:
    """Log and fold one change; False if it was already known (a duplicate).

    ``unknown``: the caller has just found no change held under its dot (one
    lookup per change instead of two at import).

    A new change that leaves its register as it was lost a conflict to a newer one
    (an older flag change, an add of an expunged message, a rename that came too
    late): ``superseded(user, mailbox_guid)`` is told, and nothing is marked for
    the store, which already holds the winner.
    """
    if not unknown and index.has_change(change.dot):
        return False
    fold_new(index, [(change, record)], superseded=superseded)
    return True


def _fold_mailbox_change(index: StateIndex, key: MailboxRef, change: Change,
                         superseded: Callable[[str, str], None] | None) -> None:
    """Fold one mailbox change into the mailbox's state (mailbox changes are few: one
    statement each is fine, in a batch too)."""
    was = load_mailbox(index, key)
    mstate = apply_to_mailbox(was, change)
    if mstate != was:
        index.store_mailbox(key.user, key.guid, encode_mailbox(mstate))
        index.mark_user_pending(key.user)
    elif superseded is not None and _mailbox_change_lost(change.op, mstate):
        superseded(key.user, key.guid)


def fold_new(index: StateIndex, changes: Sequence[tuple[Change, bytes | None]], *,
             superseded: Callable[[str, str], None] | None = None) -> None:
    """Log and fold changes known to be new (no change is held under their dots, and
    their dots differ), in order: :func:`fold_change` for a batch.

    The message states the batch touches are read with one statement per mailbox
    and written, with their pending marks and the log's rows, with one statement
    each for the whole batch (an import folds thousands of changes).
    """
    keys = [register_key(change.op) for change, _record in changes]
    wanted: dict[tuple[str, str], set[str]] = {}
    for key in keys:
        if isinstance(key, MessageRef):
            wanted.setdefault((key.mailbox.user, key.mailbox.guid), set()).add(key.guid)
    states: dict[MessageRef, MessageState] = {}
    for (user, mailbox), guids in wanted.items():
        ref_box = MailboxRef(user, mailbox)
        for guid, body, blob in index.load_messages(user, mailbox, guids):
            ref = MessageRef(ref_box, guid, body)
            states[ref] = decode_message(ref, blob)
    changed: dict[MessageRef, MessageState] = {}
    logged: list[tuple[Change, str, str, str | None, bytes | None]] = []
    for (change, record), key in zip(changes, keys, strict=True):
        added: str | None = None
        if isinstance(key, MessageRef):
            user, mailbox = key.mailbox.user, key.mailbox.guid
            before = states.get(key)
            state = apply_to_message(before, change)
            if state != before:
                states[key] = changed[key] = state
            elif superseded is not None and _message_change_lost(change.op, state):
                superseded(user, mailbox)
            if isinstance(change.op, MessageAdded):
                added = key.body
        else:
            # Mailbox changes are few: folded one by one, as fold_change does.
            user, mailbox = key.user, key.guid
            _fold_mailbox_change(index, key, change, superseded)
        logged.append((change, user, mailbox, added, record))
    index.store_messages(
        (ref.mailbox.user, ref.mailbox.guid, ref.guid, ref.body, state.alive,
         encode_message(state)) for ref, state in changed.items())
    index.mark_pending_many(
        (ref.mailbox.user, ref.mailbox.guid, ref.guid, ref.body) for ref in changed)
    index.add_change_records(logged)
