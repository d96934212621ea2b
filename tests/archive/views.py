"""What a snapshot or a store holds, as comparable values."""

from __future__ import annotations

import hashlib

from bundlesync.archive.model import SnapshotSource
from bundlesync.stores.base import Store

View = dict[str, dict[tuple[str, ...], frozenset[tuple[str, str, frozenset[str], int]]]]


def store_view(store: Store) -> View:
    """Per user and folder: (key, body SHA-256, flags, internal date) of every message."""
    view: View = {}
    for user in store.users():
        folders = {}
        for info in store.folders(user):
            folders[info.path] = frozenset(
                (m.key, hashlib.sha256(store.read_body(user, info.path, m.key)).hexdigest(),
                 m.flags, m.internal_date)
                for m in store.messages(user, info.path))
        view[user] = folders
    return view


def snapshot_view(source: SnapshotSource, snapshot_id: str, *, bodies: bool = True) -> View:
    view: View = {}
    for user in source.users(snapshot_id):
        folders = {}
        for box in source.mailboxes(snapshot_id, user):
            if bodies:
                for m in box.messages:
                    assert hashlib.sha256(source.read_body(m.body)).hexdigest() == m.body
            folders[box.path] = frozenset(
                (m.key or m.guid, m.body, m.flags, m.internal_date) for m in box.messages)
        view[user] = folders
    return view
