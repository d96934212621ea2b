"""What a snapshot holds, as the archive's readers see it.

A snapshot is the store of every backed-up user as it was at one moment: per
user, the mailboxes (GUID, path, UIDVALIDITY, subscription) and, per mailbox, the
messages (GUID, body by SHA-256, flags and keywords, UID, received date). Bodies
are read separately by their SHA-256, so a body shared by many messages, users
and snapshots is stored and read once.

Flags follow :mod:`bundlesync.stores.base`: system flags with a backslash
(``\\Seen``), keywords as they are (``$Label1``, ``Work``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

FolderPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    guid: str  # message GUID (the Maildir base name unless Dovecot recorded another)
    body: str  # SHA-256 of the raw bytes, lowercase hex
    size: int
    flags: frozenset[str]  # system flags and keywords
    uid: int | None  # the IMAP UID at backup time, if the store recorded one
    internal_date: int  # seconds since the epoch (Maildir: the file's mtime)
    key: str | None = None  # the Maildir base name at backup time (archive-v1 §8.1)


@dataclass(frozen=True, slots=True)
class ArchivedMailbox:
    guid: str  # 32 hex
    path: FolderPath
    uidvalidity: int | None
    uidnext: int | None
    subscribed: bool
    messages: tuple[ArchivedMessage, ...]


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    id: str  # short, unique, stable (hex)
    time_ms: int  # when the snapshot was taken (UTC, ms since the epoch)
    users: int
    messages: int
    bytes_added: int  # archive bytes this snapshot added when it was written
    tags: tuple[str, ...] = ()


class SnapshotSource(Protocol):
    """Read access to an opened archive (decrypted and verified as it is read)."""

    def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        ...

    def find(self, at: str) -> SnapshotInfo:
        """A snapshot by id (or unique id prefix) or by ISO 8601 date/time: the
        newest snapshot at or before it. Raises a UsageError if there is none."""
        ...

    def users(self, snapshot_id: str) -> list[str]:
        """The users the snapshot holds, sorted."""
        ...

    def mailboxes(self, snapshot_id: str, user: str) -> Iterator[ArchivedMailbox]:
        """The user's mailboxes in that snapshot, parents before children."""
        ...

    def read_body(self, sha256: str) -> bytes:
        """A body's raw bytes, verified against its SHA-256."""
        ...
