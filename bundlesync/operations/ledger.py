"""Folding changes into the state index: the one path every change takes.

A change, local (from a scan) or remote (from a bundle), is logged once by its
dot, folded into the register it touches with the core's pure merge, and the
key it touched is marked *pending*: the apply step (``operations.apply``) then
brings the store in line with the registers. Logging, folding and marking
happen in the caller's transaction, so a crash leaves either all or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from bundlesync.core.model import Change, MailboxRef, MessageAdded, MessageRef
from bundlesync.core.names import ResolvedMailbox, resolve_mailboxes
from bundlesync.core.state import (
    MailboxState,
    MessageState,
    apply_to_mailbox,
    apply_to_message,
    register_key,
)
from bundlesync.errors import StateError
from bundlesync.format import DEFAULT_LIMITS
from bundlesync.format.cbor import CborError, Cursor
from bundlesync.format.records import decode_record, encode_record
from bundlesync.state.codec import decode_mailbox, decode_message, encode_mailbox, encode_message
from bundlesync.state.index import StateIndex
from bundlesync.stores.base import FolderPath


def encode_change(change: Change) -> bytes:
    """A change as the change log keeps it: the record exactly as a bundle carries it."""
    head, _data = encode_record(change, DEFAULT_LIMITS)
    return head


def decode_change(blob: bytes) -> Change:
    try:
        record = decode_record(Cursor(blob), DEFAULT_LIMITS)
    except CborError as exc:
        raise StateError(f"damaged change record in the state index: {exc}") from exc
    if not isinstance(record, Change):
        raise StateError("the change log holds a record that is not a change")
    return record


def path_key(path: FolderPath) -> str:
    """How a folder path is stored in the index (unambiguous, sortable)."""
    return json.dumps(list(path), ensure_ascii=False)


def path_from_key(text: str) -> FolderPath:
    return tuple(json.loads(text))


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


def fold_change(index: StateIndex, change: Change, *, record: bytes | None = None) -> bool:
    """Log and fold one change; False if it was already known (a duplicate)."""
    if index.has_change(change.dot):
        return False
    key = register_key(change.op)
    body: str | None = None
    if isinstance(key, MessageRef):
        user, mailbox = key.mailbox.user, key.mailbox.guid
        state = apply_to_message(load_message(index, key), change)
        index.store_message(user, mailbox, key.guid, key.body, alive=state.alive,
                            state=encode_message(state))
        index.mark_pending(user, mailbox, key.guid, key.body)
        if isinstance(change.op, MessageAdded):
            body = key.body
    else:
        user, mailbox = key.user, key.guid
        mstate = apply_to_mailbox(load_mailbox(index, key), change)
        index.store_mailbox(user, mailbox, encode_mailbox(mstate))
        index.mark_user_pending(user)
    index.add_change(
        change.dot, user=user, mailbox=mailbox, kind=type(change.op).__name__, body=body,
        record=record if record is not None else encode_change(change),
    )
    return True


def fold_changes(index: StateIndex, changes: Iterable[Change]) -> int:
    """Fold many changes; returns how many were new. Advances the stream counters."""
    new = 0
    streams = set()
    for change in changes:
        if fold_change(index, change):
            new += 1
            streams.add(change.dot.stream)
    index.advance_streams(sorted(streams))
    return new
