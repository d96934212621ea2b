"""Restores that never roll a live mailbox back.

Two ways to bring a snapshot's mail back:

* :func:`restore_into` -- into an empty store (disaster recovery): exactly the
  snapshot's mail, with each mailbox's GUID, UIDVALIDITY and every message's UID
  written to ``dovecot-uidlist``, so IMAP clients' caches stay valid. A store
  that holds mail the snapshot does not is refused before anything is written;
  mail a previous, interrupted run of the same restore wrote is recognised and
  kept, so running it again finishes the job.
* :func:`restore_beside` -- into the live store, under
  ``Restored/<date>/<original folder path>``: only the messages the live mailbox
  lacks, recognised by message GUID or by the SHA-256 of the body (so a copy
  Dovecot re-saved under another name counts as present), with their flags and
  keywords. Nothing of the live mailbox is changed. Messages are delivered
  through the Maildir protocol of :class:`~bundlesync.stores.maildir.MaildirStore`
  (``tmp/``, link into ``cur/``; keywords under Dovecot's uidlist lock), so a
  running Dovecot and delivery agent are safe. Running it again adds nothing.

Both take a :class:`~bundlesync.archive.model.SnapshotSource`; with
``dry_run`` they compute the same per-mailbox outcome and write nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bundlesync import fsio
from bundlesync.archive.model import ArchivedMailbox, ArchivedMessage, SnapshotSource
from bundlesync.archive.restore_plan import (
    MailboxOutcome,
    RestoreReport,
    Selection,
    candidate_keys,
    check_selection_matches,
    derived_key,
    key_with_body,
    selected,
    snapshot_date,
    storable_flags,
)
from bundlesync.errors import StoreError, UsageError
from bundlesync.operations import failpoints
from bundlesync.stores import dotlock
from bundlesync.stores.base import FolderPath, Store
from bundlesync.stores.dovecot_files import FileName, UidlistRecord, format_uidlist
from bundlesync.stores.errors import KeyInUse, MessageMissing
from bundlesync.stores.maildir import MaildirStore

UIDLIST = "dovecot-uidlist"
UIDLIST_LOCK_STALE_S = 120  # as Dovecot: its uidlist lock is overridden after 2 minutes
EVERYTHING = Selection()
BATCH = 1000  # messages made durable together (one sync); what a crash can cost to redo
DEFAULT_PREFIX: FolderPath = ("Restored",)

Progress = Callable[[int], None]  # called with the bytes of each restored message


def _no_progress(_: int) -> None:
    return None


# --- into an empty store ---------------------------------------------------------------


def restore_into(
    source: SnapshotSource,
    store: Store,
    *,
    at: str,
    selection: Selection = EVERYTHING,
    dry_run: bool = False,
    progress: Progress = _no_progress,
) -> RestoreReport:
    """Write the snapshot's selected mail, exactly, into ``store`` (empty, or this
    restore's own interrupted result). See the module text."""
    snapshot = source.find(at)
    check_selection_matches(source, snapshot, selection)
    by_user: dict[str, list[ArchivedMailbox]] = defaultdict(list)
    for user, mailbox in selected(source, snapshot.id, selection):
        by_user[user].append(mailbox)
    # Every user is checked before anything is written: a refusal changes nothing.
    for user, mailboxes in by_user.items():
        _check_restorable(store, user, mailboxes)
    outcomes: list[MailboxOutcome] = []
    for user, mailboxes in by_user.items():
        if not dry_run:
            store.ensure_user(user)
        outcomes += _restore_user_into(source, store, user, mailboxes, dry_run=dry_run,
                                       progress=progress)
        if not dry_run:
            wanted = {mailbox.path for mailbox in mailboxes if mailbox.subscribed}
            store.set_subscriptions(user, store.subscriptions(user) | wanted)
    return RestoreReport(snapshot=snapshot, mode="into", dry_run=dry_run,
                         mailboxes=tuple(outcomes))


def _check_restorable(store: Store, user: str, mailboxes: list[ArchivedMailbox]) -> None:
    """Refuse a store holding mail other than what this restore itself writes."""
    allowed: dict[FolderPath, set[str]] = {}
    for mailbox in mailboxes:
        keys = allowed.setdefault(mailbox.path, set())
        for message in mailbox.messages:
            keys.update(candidate_keys(message))
    for folder in store.folders(user):
        names = store.message_names(user, folder.path)
        foreign = [key for key in names if key not in allowed.get(folder.path, set())]
        if foreign:
            label = "/".join(folder.path)
            raise UsageError(
                f"the target store is not empty: folder {label} of user {user or '(store)'!r} "
                f"holds {len(foreign)} message(s) that are not in the snapshot",
                hint="--into restores into an empty store only (nothing was changed). To bring "
                "mail back next to a live mailbox, use --beside.",
            )


@dataclass(slots=True)
class _MailboxInto:
    """What one mailbox of an --into restore has done so far."""

    mailbox: ArchivedMailbox
    existing: set[str]
    records: list[UidlistRecord] = field(default_factory=list)
    used_uids: set[int] = field(default_factory=set)
    keys_taken: set[str] = field(default_factory=set)
    restored: int = 0
    restored_bytes: int = 0
    present: int = 0
    left: int = 0  # messages not yet handled


def _restore_user_into(
    source: SnapshotSource,
    store: Store,
    user: str,
    mailboxes: list[ArchivedMailbox],
    *,
    dry_run: bool,
    progress: Progress,
) -> list[MailboxOutcome]:
    """Restore one user's mailboxes; one file-system sync per BATCH messages, across
    mailboxes, and each mailbox's UIDs written as soon as all its messages are in place."""
    folders = {info.path for info in store.folders(user)}
    states = []
    for mailbox in mailboxes:
        # A Maildir folder whose UIDs will be written gets its uidlist once, whole, at
        # the end; otherwise the GUID and UIDVALIDITY travel with the new folder.
        exact_later = isinstance(store, MaildirStore) and mailbox.uidvalidity is not None
        if not dry_run:
            store.create_folder(user, mailbox.path,
                                guid=None if exact_later else mailbox.guid,
                                uidvalidity=None if exact_later else mailbox.uidvalidity)
        existing = (set(store.message_names(user, mailbox.path))
                    if not dry_run or mailbox.path in folders else set())
        states.append(_MailboxInto(mailbox=mailbox, existing=existing,
                                   left=len(mailbox.messages)))
    pending = [(state, message) for state in states for message in state.mailbox.messages]
    finished = 0
    writer = (_IntoWriter(store, user)
              if isinstance(store, MaildirStore) and not dry_run else None)
    for chunk_start in range(0, len(pending) + 1, BATCH):
        with _batch(store, dry_run) if writer is None else writer.batch():
            for state, message in pending[chunk_start : chunk_start + BATCH]:
                _restore_message_into(source, store, user, state, message,
                                      dry_run=dry_run, progress=progress, writer=writer)
        # After the batch, its messages are durable and visible: complete mailboxes
        # get their UIDs.
        while finished < len(states) and states[finished].left == 0:
            if not dry_run:
                _finish_mailbox_into(store, user, states[finished])
            finished += 1
    return [MailboxOutcome(user=user, source=state.mailbox.path, target=state.mailbox.path,
                           restored=state.restored, restored_bytes=state.restored_bytes,
                           present=state.present) for state in states]


def _restore_message_into(
    source: SnapshotSource,
    store: Store,
    user: str,
    state: _MailboxInto,
    message: ArchivedMessage,
    *,
    dry_run: bool,
    progress: Progress,
    writer: _IntoWriter | None = None,
) -> None:
    state.left -= 1
    key = _existing_key(message, state.existing)
    if key is None:
        data = source.read_body(message.body)
        key = key_with_body(message, data)
        if key in state.keys_taken:  # two messages share a GUID (kept apart: rule 8)
            key = derived_key(message)
        if writer is not None:
            writer.add(state.mailbox.path, key=key, data=data,
                       flags=storable_flags(message.flags), internal_date=message.internal_date)
            failpoints.reached("restore")
        elif not dry_run:
            store.add_message(user, state.mailbox.path, key=key, data=data,
                              flags=storable_flags(message.flags),
                              internal_date=message.internal_date)
            failpoints.reached("restore")
        state.restored += 1
        state.restored_bytes += len(data)
        progress(len(data))
    else:
        state.present += 1
    state.keys_taken.add(key)
    if message.uid is not None and message.uid not in state.used_uids:
        state.used_uids.add(message.uid)
        state.records.append(UidlistRecord(
            uid=message.uid, key=key, guid=None if message.guid == key else message.guid))


class _IntoWriter:
    """Writes the messages of an --into restore into a Maildir store, with fewer file
    operations than a delivery next to a running Dovecot needs.

    The folders are this restore's own (the store was checked to hold nothing else)
    and no Dovecot serves them yet, so a message needs no unique temporary name, no
    look-up of its key, and no link that could fail on a name taken meanwhile: it is
    written to ``tmp/<key>`` (truncating what an interrupted run left there), and at
    the end of the batch, after one sync, renamed into ``cur/``; then each touched
    ``cur/`` is synced. The Maildir rule still holds: a message has its name in
    ``cur/`` only once its bytes are on disk, so a run killed at any point leaves
    either whole messages under their names or nothing (only ``tmp/`` debris, which
    the next run overwrites), and the next run finds what is there by name.
    """

    def __init__(self, store: MaildirStore, user: str) -> None:
        self._store = store
        self._user = user
        self._dirs: dict[FolderPath, tuple[str, tuple[int, int] | None]] = {}
        self._letters: dict[tuple[FolderPath, frozenset[str]], str] = {}
        self._pending: list[tuple[str, str, str]] = []  # (tmp path, cur path, cur dir)

    def _folder(self, path: FolderPath) -> tuple[str, tuple[int, int] | None]:
        known = self._dirs.get(path)
        if known is None:
            # The store's own resolution, which refuses a folder (or its cur/, new/,
            # tmp/) that a symlink leads out of the user's Maildir.
            directory, _ = self._store.file_name_parts(self._user, path)
            st = os.stat(directory)
            owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 and st.st_uid != 0 else None
            for sub in ("cur", "tmp"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(os.path.join(directory, sub), 0o700)
                    if owner is not None:
                        os.chown(os.path.join(directory, sub), *owner)
            known = self._dirs[path] = (directory, owner)
        return known

    def _letters_for(self, path: FolderPath, flags: frozenset[str]) -> str:
        letters = self._letters.get((path, flags))
        if letters is None:
            # The store's own rule (and keyword registration under Dovecot's lock),
            # once per folder and set of flags rather than once per message.
            letters = self._store.file_name_parts(self._user, path, flags)[1]
            self._letters[(path, flags)] = letters
        return letters

    def add(self, path: FolderPath, *, key: str, data: bytes, flags: frozenset[str],
            internal_date: int) -> None:
        """Write one message to ``tmp/``; it gets its name when the batch ends."""
        directory, owner = self._folder(path)
        name = FileName(key=key, letters="").with_letters(
            self._letters_for(path, flags))
        tmp_path = os.path.join(directory, "tmp", key)
        date_ns = max(0, internal_date) * 1_000_000_000
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                fsio.write_all(fd, data)
                if owner is not None:
                    os.fchown(fd, *owner)
                os.utime(fd, ns=(date_ns, date_ns))  # Dovecot's received date
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"could not write message {key} into folder "
                             f"{'/'.join(path)}: {exc.strerror or exc}") from exc
        cur = os.path.join(directory, "cur")
        self._pending.append((tmp_path, os.path.join(cur, name), cur))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Name the messages written inside the block, after one sync for all."""
        self._pending = []
        yield
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            os.sync()
            touched: dict[str, None] = {}
            for tmp_path, cur_path, cur in pending:
                os.rename(tmp_path, cur_path)
                touched[cur] = None
            for cur in touched:
                fsio.fsync_dir(cur)
        except OSError as exc:
            raise StoreError(f"could not make restored messages durable: "
                             f"{exc.strerror or exc}") from exc


def _finish_mailbox_into(store: Store, user: str, state: _MailboxInto) -> None:
    failpoints.reached("restore-folder")  # messages in place, UIDs not yet written
    if state.mailbox.uidvalidity is not None and isinstance(store, MaildirStore):
        _write_uidlist(store, user, state.mailbox, state.records)


def _existing_key(message: ArchivedMessage, existing: set[str]) -> str | None:
    for key in candidate_keys(message):
        if key in existing:
            return key
    return None


@contextlib.contextmanager
def _batch(store: Store, dry_run: bool) -> Iterator[None]:
    if dry_run:
        yield
        return
    with store.batch():
        yield


def _write_uidlist(
    store: MaildirStore, user: str, mailbox: ArchivedMailbox, records: list[UidlistRecord]
) -> None:
    """Give the restored folder the snapshot's UIDs: replace dovecot-uidlist under
    Dovecot's own lock (``dovecot-uidlist.lock``, renamed into place)."""
    assert mailbox.uidvalidity is not None
    directory = store.folder_dir(user, mailbox.path)
    next_uid = mailbox.uidnext or 1
    text = format_uidlist(uidvalidity=mailbox.uidvalidity, next_uid=next_uid,
                          guid=mailbox.guid, records=records).encode("utf-8")
    try:
        st = os.stat(directory)
        owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 and st.st_uid != 0 else None
        dotlock.replace_file(
            os.path.join(directory, UIDLIST),
            lambda old: None if old == text else text,
            stale_after=UIDLIST_LOCK_STALE_S,
            timeout=30.0,
            owner=owner,
            fsync=True,
        )
    except OSError as exc:
        raise StoreError(
            f"could not write the UIDs of folder {'/'.join(mailbox.path)}: {exc.strerror or exc}"
        ) from exc


# --- beside a live mailbox -------------------------------------------------------------


class _Presence:
    """The messages of some folders, recognisable by GUID or body hash.

    Bodies are hashed lazily and only for messages whose size equals that of a
    message being looked for, so a large live mailbox is not read whole.
    """

    def __init__(self, store: Store, user: str, paths: list[FolderPath]) -> None:
        self._store = store
        self._user = user
        self.guids: set[str] = set()
        self.hashes: set[str] = set()
        self._by_size: dict[int, list[tuple[FolderPath, str]]] = defaultdict(list)
        for path in paths:
            for stored in store.messages(user, path):
                self.guids.add(stored.guid)
                self._by_size[stored.size].append((path, stored.key))

    def holds(self, message: ArchivedMessage) -> bool:
        if message.guid in self.guids or message.body in self.hashes:
            return True
        for path, key in self._by_size.pop(message.size, []):
            with contextlib.suppress(MessageMissing):
                data = self._store.read_body(self._user, path, key)
                self.hashes.add(hashlib.sha256(data).hexdigest())
        return message.body in self.hashes

    def add(self, message: ArchivedMessage) -> None:
        self.guids.add(message.guid)
        self.hashes.add(message.body)


def restore_beside(
    source: SnapshotSource,
    store: Store,
    *,
    at: str,
    selection: Selection = EVERYTHING,
    prefix: FolderPath = DEFAULT_PREFIX,
    dry_run: bool = False,
    progress: Progress = _no_progress,
) -> RestoreReport:
    """Bring back what the live mailboxes lack, under ``prefix/<date>/<folder>``.

    See the module text. The live mailbox of a snapshot's mailbox is the folder
    with the same mailbox GUID (it may have been renamed since), else the
    folder with the same path.
    """
    snapshot = source.find(at)
    check_selection_matches(source, snapshot, selection)
    date = snapshot_date(snapshot)
    outcomes: list[MailboxOutcome] = []
    current_user: str | None = None
    folders: dict[FolderPath, str | None] = {}
    by_guid: dict[str, FolderPath] = {}
    new_subscriptions: set[FolderPath] = set()
    for user, mailbox in selected(source, snapshot.id, selection):
        if user != current_user:
            if current_user is not None and new_subscriptions:
                _subscribe(store, current_user, new_subscriptions)
            current_user, new_subscriptions = user, set()
            folders = {info.path: info.guid for info in store.folders(user)}
            by_guid = {guid: path for path, guid in folders.items() if guid}
        if mailbox.path[: len(prefix)] == prefix:
            continue  # an earlier restore, backed up: restoring it again would nest dates
        target = (*prefix, date, *mailbox.path)
        live = by_guid.get(mailbox.guid) or (mailbox.path if mailbox.path in folders else None)
        looked_at = [path for path in (live, target) if path is not None and path in folders]
        presence = _Presence(store, user, looked_at)
        restored = restored_bytes = present = 0
        missing = []
        for message in mailbox.messages:
            if presence.holds(message):
                present += 1
            else:
                presence.add(message)
                missing.append(message)
        if missing and not dry_run:
            store.ensure_user(user)
            store.create_folder(user, target, guid=None, uidvalidity=None)
            folders[target] = None
            new_subscriptions.add(target)
        for chunk_start in range(0, len(missing), BATCH):
            with _batch(store, dry_run):
                for message in missing[chunk_start : chunk_start + BATCH]:
                    data = source.read_body(message.body)
                    if not dry_run:
                        _add_beside(store, user, target, message, data)
                        failpoints.reached("restore")
                    restored += 1
                    restored_bytes += len(data)
                    progress(len(data))
        if missing and not dry_run:
            failpoints.reached("restore-folder")
        outcomes.append(MailboxOutcome(user=user, source=mailbox.path, target=target,
                                       restored=restored, restored_bytes=restored_bytes,
                                       present=present))
    if current_user is not None and new_subscriptions and not dry_run:
        _subscribe(store, current_user, new_subscriptions)
    return RestoreReport(snapshot=snapshot, mode="beside", dry_run=dry_run,
                         mailboxes=tuple(outcomes))


def _add_beside(
    store: Store, user: str, target: FolderPath, message: ArchivedMessage, data: bytes
) -> None:
    flags = storable_flags(message.flags)
    key = key_with_body(message, data)
    try:
        store.add_message(user, target, key=key, data=data, flags=flags,
                          internal_date=message.internal_date)
    except KeyInUse:
        # The GUID names another body in the restore folder: keep both (nothing dropped).
        store.add_message(user, target, key=derived_key(message), data=data, flags=flags,
                          internal_date=message.internal_date)


def _subscribe(store: Store, user: str, paths: set[FolderPath]) -> None:
    # Clients that show only subscribed folders must see the restored ones.
    current = store.subscriptions(user)
    if not paths <= current:
        store.set_subscriptions(user, current | paths)


__all__ = ["DEFAULT_PREFIX", "restore_beside", "restore_into"]
