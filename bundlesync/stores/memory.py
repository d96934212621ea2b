"""An in-memory store with the Maildir adapter's semantics, for tests of the operations.

Same contract as :class:`~bundlesync.stores.maildir.MaildirStore`: the same
name checks (UnsafeName, also for a key whose S=/W= fields misstate the size),
idempotent add (KeyInUse for other bytes under the key), missing expunge is
fine, at most 26 keywords per folder (compared without regard to case; further
ones are not stored), folders created by
``create_folder`` carry the GUID and UIDVALIDITY given (or none, like a Maildir
folder Dovecot has not seen yet), and a folder's stamp changes on every change.

The ``simulate_*`` methods play the other programs on a live store -- a delivery
agent, Dovecot, a mail client -- so tests can change the store behind the
operations' back; ``racy`` makes every stamp racy.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from bundlesync.core.model import SYSTEM_FLAGS
from bundlesync.errors import StoreError
from bundlesync.stores.base import INBOX, FolderInfo, FolderPath, FolderStamp, StoredMessage
from bundlesync.stores.dovecot_files import MAX_KEYWORDS, misstated_size
from bundlesync.stores.errors import (
    FolderExists,
    FolderNotEmpty,
    FolderNotFound,
    KeyInUse,
    MessageMissing,
    UnknownUser,
    UnsafeName,
)
from bundlesync.stores.names import check_folder_path, check_key, check_user, storable_flags


@dataclass(slots=True)
class _Message:
    data: bytes
    flags: frozenset[str]
    internal_date: int
    guid: str


@dataclass(slots=True)
class _Folder:
    guid: str | None
    uidvalidity: int | None
    version: int
    keywords: list[str] = field(default_factory=list)  # index = letter a..z
    messages: dict[str, _Message] = field(default_factory=dict)


@dataclass(slots=True)
class _User:
    folders: dict[FolderPath, _Folder] = field(default_factory=dict)
    subscriptions: set[FolderPath] = field(default_factory=set)


class MemoryStore:
    """A :class:`~bundlesync.stores.base.Store` held in memory (see the module text)."""

    def __init__(self) -> None:
        self._users: dict[str, _User] = {}
        self._clock = itertools.count(1)
        self.racy = False

    # --- helpers -----------------------------------------------------------------------

    @staticmethod
    def _check_user(user: str) -> str:
        return user if user == "" else check_user(user)

    def _user(self, user: str) -> _User:
        self._check_user(user)
        try:
            return self._users[user]
        except KeyError:
            raise UnknownUser(f"user {user!r} does not exist in this store") from None

    def _folder(self, user: str, path: FolderPath) -> _Folder:
        check_folder_path(path)
        account = self._users.get(self._check_user(user))
        folder = account.folders.get(path) if account else None
        if folder is None:
            raise FolderNotFound(f"folder {'/'.join(path)} of user {user!r} does not exist")
        return folder

    def _touch(self, folder: _Folder) -> None:
        folder.version = next(self._clock)

    def _stamp(self, folder: _Folder) -> FolderStamp:
        return FolderStamp(marks=(folder.version,), racy=self.racy)

    def _store_flags(self, folder: _Folder, flags: Iterable[str]) -> frozenset[str]:
        stored: set[str] = set()
        # As the Maildir adapter: what a Maildir cannot hold goes in storable.
        for flag in storable_flags(frozenset(flags), system=SYSTEM_FLAGS):
            if flag.startswith("\\"):
                stored.add(flag)
                continue
            known = next((k for k in folder.keywords if k.lower() == flag.lower()), None)
            if known is None and len(folder.keywords) < MAX_KEYWORDS:
                folder.keywords.append(flag)
                known = flag
            if known is not None:
                stored.add(known)
        return frozenset(stored)

    @staticmethod
    def _view(key: str, message: _Message) -> StoredMessage:
        return StoredMessage(
            key=key,
            guid=message.guid,
            flags=message.flags,
            size=len(message.data),
            internal_date=message.internal_date,
        )

    # --- Store protocol ----------------------------------------------------------------

    def users(self) -> list[str]:
        """Every user present, sorted."""
        return sorted(self._users)

    def ensure_user(self, user: str) -> None:
        """Create the user with an empty INBOX (idempotent)."""
        self._check_user(user)
        if user not in self._users:
            self._users[user] = _User(
                folders={INBOX: _Folder(guid=None, uidvalidity=None, version=next(self._clock))}
            )

    def folders(self, user: str) -> list[FolderInfo]:
        """Every folder of the user, sorted by path; [] for an unknown user."""
        self._check_user(user)
        account = self._users.get(user)
        if account is None:
            return []
        return [
            FolderInfo(
                path=path, guid=folder.guid, uidvalidity=folder.uidvalidity,
                stamp=self._stamp(folder),
            )
            for path, folder in sorted(account.folders.items())
        ]

    def folder_stamp(self, user: str, path: FolderPath) -> FolderStamp | None:
        """The folder's stamp (a change counter), or None if it does not exist."""
        check_folder_path(path)
        self._check_user(user)
        account = self._users.get(user)
        folder = account.folders.get(path) if account else None
        return None if folder is None else self._stamp(folder)

    def messages(self, user: str, path: FolderPath) -> list[StoredMessage]:
        """Every message of the folder, sorted by key."""
        folder = self._folder(user, path)
        return [self._view(key, folder.messages[key]) for key in sorted(folder.messages)]

    def message_names(self, user: str, path: FolderPath) -> dict[str, tuple[str, frozenset[str]]]:
        """Key -> (GUID, flags) of every message."""
        return {m.key: (m.guid, m.flags) for m in self.messages(user, path)}

    def message_flags(self, user: str, path: FolderPath) -> dict[str, frozenset[str]]:
        """Key -> flags of every message."""
        return {m.key: m.flags for m in self.messages(user, path)}

    def message_info(self, user: str, path: FolderPath, key: str) -> StoredMessage:
        """One message with its size and date; MessageMissing if it is gone."""
        for message in self.messages(user, path):
            if message.key == key:
                return message
        raise MessageMissing(f"message {key} is not in folder {'/'.join(path)}")

    def read_body(self, user: str, path: FolderPath, key: str) -> bytes:
        """The message's bytes; MessageMissing if it is not there."""
        check_key(key)
        message = self._folder(user, path).messages.get(key)
        if message is None:
            raise MessageMissing(f"message {key} is not in folder {'/'.join(path)}")
        return message.data

    def prefetch(self, user: str) -> None:
        """Nothing to read ahead in memory."""

    def read_messages(self, user: str, path: FolderPath, keys: Iterable[str], *,
                      max_size: int) -> Iterator[tuple[StoredMessage, bytes | None]]:
        """Each message of ``keys`` still there, with its bytes (None above ``max_size``)."""
        for key in [check_key(key) for key in keys]:
            try:
                message = self.message_info(user, path, key)
                data = None if message.size > max_size else self.read_body(user, path, key)
            except MessageMissing:
                continue
            yield message, data

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
        """Add (idempotent for the same key and bytes; KeyInUse for other bytes).

        ``source`` is not used: the bytes are kept in memory."""
        del source
        check_key(key)
        problem = misstated_size(key, data)
        if problem is not None:
            raise UnsafeName(f"message key {key} misstates its size ({problem})")
        folder = self._folder(user, path)
        stored = self._store_flags(folder, flags)
        existing = folder.messages.get(key)
        if existing is not None:
            if existing.data != data:
                raise KeyInUse(f"folder {'/'.join(path)} holds other bytes under key {key}")
            if existing.flags != stored:
                existing.flags = stored
                self._touch(folder)
            return self._view(key, existing)
        message = _Message(bytes(data), stored, max(0, internal_date), key)
        folder.messages[key] = message
        self._touch(folder)
        return self._view(key, message)

    def take_warnings(self) -> list[str]:
        """Nothing is ever skipped in memory."""
        return []

    @contextlib.contextmanager
    def batch(self, *, step: Callable[[str], None] | None = None) -> Iterator[None]:
        """Deliveries in memory are atomic already: nothing to defer."""
        del step
        yield

    def set_flags(self, user: str, path: FolderPath, key: str, flags: frozenset[str]
                  ) -> frozenset[str]:
        """Make the message's flags exactly ``flags`` (as far as they can be stored)."""
        check_key(key)
        folder = self._folder(user, path)
        message = folder.messages.get(key)
        if message is None:
            raise MessageMissing(f"message {key} is not in folder {'/'.join(path)}")
        stored = self._store_flags(folder, flags)
        if stored != message.flags:
            message.flags = stored
            self._touch(folder)
        return stored

    def expunge(self, user: str, path: FolderPath, key: str) -> None:
        """Remove the message; a message or folder already gone is fine."""
        check_key(key)
        check_folder_path(path)
        account = self._users.get(self._check_user(user))
        folder = account.folders.get(path) if account else None
        if folder is not None and folder.messages.pop(key, None) is not None:
            self._touch(folder)

    def create_folder(
        self, user: str, path: FolderPath, *, guid: str | None, uidvalidity: int | None
    ) -> None:
        """Create an empty folder (idempotent); fills in a missing GUID/UIDVALIDITY if empty."""
        check_folder_path(path)
        account = self._user(user)
        folder = account.folders.get(path)
        if folder is None:
            account.folders[path] = _Folder(guid, uidvalidity, next(self._clock))
        elif folder.guid is None and folder.uidvalidity is None and not folder.messages:
            # Like a Maildir folder without dovecot-uidlist: seeded now.
            folder.guid, folder.uidvalidity = guid, uidvalidity

    def rename_folder(self, user: str, old: FolderPath, new: FolderPath) -> None:
        """Rename ``old`` and every folder below it (idempotent once done)."""
        check_folder_path(old)
        check_folder_path(new)
        if INBOX in (old, new):
            raise StoreError("INBOX cannot be renamed, and no folder can be renamed to INBOX")
        if old == new:
            return
        if new[: len(old)] == old:
            raise StoreError(f"cannot move folder {'/'.join(old)} below itself")
        account = self._user(user)
        moving = [path for path in account.folders if path[: len(old)] == old]
        if not moving:
            if new in account.folders:
                return
            raise FolderNotFound(f"folder {'/'.join(old)} of user {user!r} does not exist")
        targets = {path: new + path[len(old) :] for path in moving}
        clash = [target for target in targets.values() if target in account.folders]
        if clash:
            raise FolderExists(f"cannot rename {'/'.join(old)}: {'/'.join(clash[0])} exists")
        for path, target in targets.items():
            folder = account.folders.pop(path)
            self._touch(folder)
            account.folders[target] = folder

    def delete_folder(self, user: str, path: FolderPath) -> None:
        """Delete an empty folder (FolderNotEmpty otherwise); gone already is fine."""
        if path == INBOX:
            raise StoreError("INBOX cannot be deleted")
        check_folder_path(path)
        account = self._user(user)
        folder = account.folders.get(path)
        if folder is None:
            return
        if folder.messages:
            raise FolderNotEmpty(
                f"folder {'/'.join(path)} still holds {len(folder.messages)} message(s)"
            )
        del account.folders[path]

    def subscriptions(self, user: str) -> set[FolderPath]:
        """The subscribed paths."""
        self._check_user(user)
        account = self._users.get(user)
        return set(account.subscriptions) if account else set()

    def set_subscriptions(self, user: str, paths: Iterable[FolderPath]) -> None:
        """Make the subscriptions exactly ``paths``."""
        wanted = {check_folder_path(tuple(path)) for path in paths}
        self._user(user).subscriptions = wanted

    # --- test hooks: changes made by other programs -------------------------------------

    def simulate_delivery(
        self,
        user: str,
        path: FolderPath,
        *,
        key: str,
        data: bytes,
        flags: frozenset[str] = frozenset(),
        internal_date: int = 0,
        guid: str | None = None,
    ) -> None:
        """A delivery agent or mail client added a message (``guid`` as Dovecot recorded it)."""
        folder = self._folder(user, path)
        stored = self._store_flags(folder, flags)
        folder.messages[key] = _Message(bytes(data), stored, internal_date, guid or key)
        self._touch(folder)

    def simulate_flags(self, user: str, path: FolderPath, key: str, flags: frozenset[str]) -> None:
        """A mail client changed a message's flags."""
        self.set_flags(user, path, key, flags)

    def simulate_expunge(self, user: str, path: FolderPath, key: str) -> None:
        """A mail client expunged a message."""
        self.expunge(user, path, key)

    def simulate_folder_identity(
        self, user: str, path: FolderPath, *, guid: str | None, uidvalidity: int | None
    ) -> None:
        """Dovecot recorded (or lost) the folder's GUID and UIDVALIDITY."""
        folder = self._folder(user, path)
        folder.guid, folder.uidvalidity = guid, uidvalidity

    def simulate_rename(self, user: str, old: FolderPath, new: FolderPath) -> None:
        """A mail client renamed a folder (and its children)."""
        self.rename_folder(user, old, new)

    def simulate_new_folder(self, user: str, path: FolderPath) -> None:
        """A mail client created a folder; Dovecot has not recorded its identity yet."""
        self.create_folder(user, path, guid=None, uidvalidity=None)
