"""The one small interface every mail store adapter implements.

Operations (``bundlesync.operations``) speak to a store only through
:class:`Store`. Two adapters exist: ``MaildirStore`` (Dovecot-compatible
Maildir++, one user or many through a template) and ``MemoryStore`` (tests).

Words:

* A **folder path** is a tuple of decoded (Unicode) name components:
  ``("INBOX",)`` is the inbox, ``("Archive", "2024")`` is ``Archive/2024``
  whatever the server's hierarchy separator.
* A message **key** is its file base name: unique within a folder, stable across
  flag changes. Its **GUID** is the key unless the server recorded another
  (Dovecot's ``G`` extension in ``dovecot-uidlist``).
* **Flags** are names: system flags with a backslash (``\\Seen``) and keywords
  as they are (``$Label1``, ``Work``).
* A **stamp** is cheap to read (one or two ``stat`` calls) and changes whenever
  a message file in the folder is added, removed or renamed. Equal stamps mean
  the folder need not be listed again -- unless the stamp is *racy* (taken in
  the same clock tick as the change), which :attr:`FolderStamp.racy` says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

FolderPath = tuple[str, ...]
INBOX: FolderPath = ("INBOX",)


@dataclass(frozen=True, slots=True)
class FolderStamp:
    """Change marker of one folder: mtimes (ns) of its message directories."""

    marks: tuple[int, ...]
    racy: bool = False


@dataclass(frozen=True, slots=True)
class FolderInfo:
    path: FolderPath
    guid: str | None  # mailbox GUID the server recorded, if any (32 hex)
    uidvalidity: int | None
    stamp: FolderStamp


@dataclass(frozen=True, slots=True)
class StoredMessage:
    key: str  # file base name, unique in the folder
    guid: str  # message GUID (usually == key)
    flags: frozenset[str]
    size: int  # bytes of the raw message as stored
    internal_date: int  # seconds since the epoch (Maildir: the file's mtime)


@runtime_checkable
class Store(Protocol):
    """A mail store holding one or many users' mailboxes."""

    def users(self) -> list[str]:
        """Every user currently present in the store, sorted."""
        ...

    def ensure_user(self, user: str) -> None:
        """Create the user's empty mail directory (with INBOX) if it does not exist."""
        ...

    def folders(self, user: str) -> list[FolderInfo]:
        """Every folder of the user, INBOX included, sorted by path."""
        ...

    def folder_stamp(self, user: str, path: FolderPath) -> FolderStamp | None:
        """The folder's current stamp, or None if the folder does not exist."""
        ...

    def messages(self, user: str, path: FolderPath) -> list[StoredMessage]:
        """Every message in the folder (new and cur), sorted by key."""
        ...

    def message_names(self, user: str, path: FolderPath) -> dict[str, tuple[str, frozenset[str]]]:
        """Key -> (GUID, flags) of every message, as cheaply as the store allows
        (Maildir: from the file names, with no stat per message)."""
        ...

    def message_flags(self, user: str, path: FolderPath) -> dict[str, frozenset[str]]:
        """Key -> flags of every message: :meth:`message_names` without the GUIDs (a
        Maildir need not read ``dovecot-uidlist``), what a scan compares."""
        ...

    def message_info(self, user: str, path: FolderPath, key: str) -> StoredMessage:
        """One message with its size and internal date. Raises ``MessageMissing``."""
        ...

    def read_body(self, user: str, path: FolderPath, key: str) -> bytes:
        """The raw bytes of one message. Raises ``MessageMissing`` if it is gone."""
        ...

    def prefetch(self, user: str) -> None:
        """A hint that every message of ``user`` is about to be read (``init``): the
        store may start reading ahead. Never fails; safe to call from another thread."""
        ...

    def read_messages(self, user: str, path: FolderPath, keys: Iterable[str], *,
                      max_size: int) -> Iterator[tuple[StoredMessage, bytes | None]]:
        """Each message of ``keys`` still in the folder, with its raw bytes (None when it
        is larger than ``max_size``: not read); the ones gone are left out.

        :meth:`message_info` and :meth:`read_body` for many messages of one folder
        (a scan's new files), with one look at the folder for all of them.
        """
        ...

    def add_message(
        self,
        user: str,
        path: FolderPath,
        *,
        key: str,
        data: bytes,
        flags: frozenset[str],
        internal_date: int,
        source: str | None = None,
    ) -> StoredMessage:
        """Deliver a message atomically (tmp/, fsync, rename into cur/).

        Idempotent: if a message with this key and the same bytes is already
        there, it is returned unchanged (its flags set to ``flags``). The returned
        message carries the flags actually stored. Raises ``KeyInUse`` if the key
        holds other bytes, ``UnsafeName`` if the key cannot name these bytes.

        ``source``, if given, is a durable file holding exactly ``data`` that the
        caller gives up: the store may make it the message's file (Maildir: a hard
        link, given the owner, mode and date a delivered file gets) instead of
        writing the bytes again. It is taken only while no other name links to it
        (two messages never share a file); otherwise, or if it cannot be linked,
        the bytes are written as without it.
        """
        ...

    def batch(self, *, step: Callable[[str], None] | None = None
              ) -> AbstractContextManager[None]:
        """A block in which deliveries, flag changes and expunges may be made durable
        together, at its end.

        ``add_message`` inside may return before the message is visible; it is
        visible (and on disk) when the block ends, and so are the renames and
        unlinks of ``set_flags`` and ``expunge``. Callers record the block's work
        as done only after the block. ``step("written")`` is called once the
        block's messages are all in ``tmp/``, before they are synced and named, and
        ``step("deliver")`` after each message is named at the end (the kill -9
        tests stop there).
        """
        ...

    def set_flags(self, user: str, path: FolderPath, key: str, flags: frozenset[str]
                  ) -> frozenset[str]:
        """Make the message's flags ``flags`` (a rename in Maildir); returns the flags
        actually stored. Raises ``MessageMissing`` if the message is gone."""
        ...

    def expunge(self, user: str, path: FolderPath, key: str) -> None:
        """Remove the message. Removing a message that is already gone is not an error."""
        ...

    def create_folder(
        self, user: str, path: FolderPath, *, guid: str | None, uidvalidity: int | None
    ) -> None:
        """Create an empty folder (idempotent)."""
        ...

    def rename_folder(self, user: str, old: FolderPath, new: FolderPath) -> None:
        """Rename a folder and every folder below it."""
        ...

    def delete_folder(self, user: str, path: FolderPath) -> None:
        """Delete a folder that holds no messages (children are left alone)."""
        ...

    def subscriptions(self, user: str) -> set[FolderPath]:
        ...

    def take_warnings(self) -> list[str]:
        """What the store skipped since the last call (e.g. a symlinked folder), one
        line each; the operation puts them into its report."""
        ...

    def set_subscriptions(self, user: str, paths: Iterable[FolderPath]) -> None:
        ...
