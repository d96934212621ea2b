"""Turning what changed in the store into local change records -- incrementally.

The state index remembers every folder (with its stamp: the mtimes of ``cur/``
and ``new/``) and every message file as last seen. A scan of one user runs in
three parts:

* **gather** (this module, reads the disk): the user's folders with their
  stamps; the message names of each folder whose stamp moved (or was racy:
  taken in the same clock tick as a change) or that is new; the size of each new
  file, and its body's SHA-256 unless it is a known file moved here;
* **diff** (:mod:`operations.scandiff`, pure): what the index remembers and what
  the disk holds become mailbox and message operations -- folders matched by
  GUID, path or content (a rename on disk), adds, expunges, flag changes, moves
  (an add and an expunge whose body is not read again), creates, renames and
  deletes of folders, subscriptions;
* **record** (this module): every operation gets its dot and timestamp and is
  folded through :mod:`operations.ledger`; the index remembers the new rows. All
  users of a scan are recorded in one transaction.

At ``init`` the scan takes an *inventory*: its changes carry the inventory
timestamp, which any real change anywhere beats, so two sites set up on copies
of one store add nothing on their first exchange.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bundlesync.core.model import (
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRenamed,
    MessageAdded,
    MessageExpunged,
    Operation,
    SubscriptionSet,
    Timestamp,
)
from bundlesync.core.names import resolve_mailboxes
from bundlesync.core.state import inventory_timestamp
from bundlesync.operations.inventory import record_inventory
from bundlesync.operations.ledger import fold_change, resolve_user, user_mailboxes
from bundlesync.operations.scandiff import (
    Arrived,
    FileDiff,
    IndexView,
    Listing,
    NewFile,
    Planned,
    UserDiff,
    diff_files,
    diff_subscriptions,
    diff_user,
    folders_to_list,
    match_folders,
    match_renamed,
    name_new_folders,
    unchanged,
)
from bundlesync.operations.site import Site
from bundlesync.state.index import FileRow
from bundlesync.stores.base import FolderPath, StoredMessage
from bundlesync.stores.errors import MessageMissing


@dataclass
class ScanStats:
    users: int = 0
    folders: int = 0
    folders_listed: int = 0
    added: int = 0
    expunged: int = 0
    flag_changes: int = 0
    mailboxes_created: int = 0
    mailboxes_renamed: int = 0
    mailboxes_deleted: int = 0
    subscriptions: int = 0
    bytes_hashed: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return (self.added + self.expunged + self.flag_changes + self.mailboxes_created
                + self.mailboxes_renamed + self.mailboxes_deleted + self.subscriptions)

    def count(self, planned: Planned) -> None:
        """Count one recorded group (a group is one folder's worth of change)."""
        counter = _COUNTERS[type(planned.ops[0])]
        setattr(self, counter, getattr(self, counter) + 1)


_COUNTERS: dict[type[Operation], str] = {
    MessageAdded: "added", MessageExpunged: "expunged", FlagsChanged: "flag_changes",
    MailboxCreated: "mailboxes_created", MailboxRenamed: "mailboxes_renamed",
    MailboxDeleted: "mailboxes_deleted", SubscriptionSet: "subscriptions",
}


# -- gather ------------------------------------------------------------------------------


class _Gatherer:
    """Reads what the diff asks for, from the store and from the index."""

    def __init__(self, site: Site, user: str, stats: ScanStats) -> None:
        self.site = site
        self.user = user
        self.stats = stats
        self.listings: dict[FolderPath, Listing] = {}
        self.files: dict[str, Sequence[FileRow]] = {}

    def list_folders(self, paths: Sequence[FolderPath]) -> None:
        for path in paths:
            if path not in self.listings:
                # Names only: a file already known needs no stat; new ones get one below.
                self.listings[path] = self.site.store.message_names(self.user, path)
                self.stats.folders_listed += 1

    def load_files(self, guids: Sequence[str]) -> None:
        for guid in guids:
            if guid not in self.files:
                self.files[guid] = self.site.index.files(self.user, guid)

    def arrivals(self, files_diff: FileDiff) -> dict[tuple[str, str], Arrived]:
        """Size, date and body hash of each new file still there."""
        found: dict[tuple[str, str], Arrived] = {}
        store = self.site.store
        limit = self.site.config.limits.max_message_size
        # A file that may be a vanished one moved here is looked at first: if it is,
        # its body is not read. The others (at init, every file) are read folder by
        # folder, each opened once.
        by_folder: dict[tuple[str, FolderPath], list[str]] = {}
        for new in files_diff.new_files:
            if new.key in files_diff.gone_by_key:
                self._arrived_one(new, files_diff, found, limit)
            else:
                by_folder.setdefault((new.folder, new.info.path), []).append(new.key)
        for (folder, path), keys in by_folder.items():
            for message, data in store.read_messages(self.user, path, keys, max_size=limit):
                if data is None:
                    self._too_big(message, path, limit)
                    continue
                self.stats.bytes_hashed += len(data)
                found[(folder, message.key)] = Arrived(message,
                                                       hashlib.sha256(data).hexdigest())
        return found

    def _arrived_one(self, new: NewFile, files_diff: FileDiff,
                     found: dict[tuple[str, str], Arrived], limit: int) -> None:
        store = self.site.store
        try:
            message = store.message_info(self.user, new.info.path, new.key)
            if message.size > limit:
                self._too_big(message, new.info.path, limit)
                return
            body = files_diff.known_body(message.key, message.size)
            if body is None:
                data = store.read_body(self.user, new.info.path, message.key)
                body = hashlib.sha256(data).hexdigest()
                self.stats.bytes_hashed += len(data)
        except MessageMissing:
            return  # gone again since the listing: it never was, for us
        found[(new.folder, new.key)] = Arrived(message, body)

    def _too_big(self, message: StoredMessage, path: FolderPath, limit: int) -> None:
        # Never read, never sent: one huge file must not stop every export.
        self.stats.warnings.append(
            f"skipped message {message.key} of user {self.user or '(store)'} in "
            f"folder {'/'.join(path)}: {message.size} bytes, above the "
            f"limit of {limit} ([limits] max_message_size)")


def gather_and_diff(site: Site, user: str, *, now_ms: int, stats: ScanStats
                    ) -> tuple[UserDiff, Mapping[FolderPath, str]]:
    """The operations of one user's scan, and the user's folders (path -> GUID)."""
    index = site.index
    states = user_mailboxes(index, user)
    view = IndexView(user, {row.guid: row for row in index.folders(user)}, states,
                     resolve_mailboxes(states, live=index.live_mailboxes(user)))
    wants = site.config.filters.wants
    disk = [f for f in site.store.folders(user) if wants(f.path)]
    stats.folders += len(disk)
    gather = _Gatherer(site, user, stats)
    match = match_folders(view.folders, disk, wants=wants)
    listed = folders_to_list(view.folders, match)
    gather.list_folders([info.path for info in listed])
    if match.unmatched:
        gather.load_files(match.vanished)
    match = match_renamed(match, gather.listings, gather.files)
    new_folders = name_new_folders(match, view.folders, user=user, site_id=site.site_id,
                                   now_ms=now_ms)
    everything = {**match.matched, **new_folders}
    # Every folder diff_files looks into was listed above (its stamp moved, or it
    # was not matched by GUID or path).
    gather.load_files([g for g, info in everything.items() if not unchanged(view.folders, g, info)])
    gather.load_files(match.vanished)
    files_diff = diff_files(view.folders, everything, gather.listings, gather.files)
    diff = diff_user(view, match, new_folders, files_diff, arrived=gather.arrivals(files_diff),
                     vanished_files=gather.files, now_ms=now_ms)
    return diff, {info.path: guid for guid, info in everything.items()}


# -- record ------------------------------------------------------------------------------


class _Recorder:
    """Gives each operation its dot and timestamp and folds it (caller's transaction)."""

    def __init__(self, site: Site, *, now_ms: int, inventory: bool, stats: ScanStats) -> None:
        self.site = site
        self.now_ms = now_ms
        self.inventory = inventory
        self.stats = stats

    def stamp(self) -> Timestamp:
        """The timestamp of a change made now (the inventory's, during ``init``)."""
        if self.inventory:
            return inventory_timestamp(self.site.site_id)
        # Saved by new_change, which every stamp taken here goes through.
        return self.site.clock.tick(self.now_ms)

    def record(self, planned: Sequence[Planned]) -> None:
        if self.inventory:
            record_inventory(self.site, planned, count=self.stats.count)
            return
        for group in planned:
            shared = self.stamp() if group.one_stamp else None
            for op in group.ops:
                ts = shared if shared is not None else self.stamp()
                change = self.site.new_change(op, now_ms=self.now_ms, ts=ts)
                fold_change(self.site.index, change)
            self.stats.count(group)

    def remember(self, user: str, diff: UserDiff) -> None:
        index = self.site.index
        for folder in diff.folder_rows:
            index.put_folder(user, folder)
        # Bulk statements: at init, one row per message of the store.
        index.put_files(diff.file_rows)
        index.drop_files(user, ((row.folder, row.key) for row in diff.dropped_files))
        for guid in diff.dropped_folders:
            index.drop_folder(user, guid)


def scan_user(site: Site, user: str, *, now_ms: int, inventory: bool,
              stats: ScanStats) -> None:
    """Gather, diff and record one user (inside the caller's transaction)."""
    diff, folders = gather_and_diff(site, user, now_ms=now_ms, stats=stats)
    recorder = _Recorder(site, now_ms=now_ms, inventory=inventory, stats=stats)
    recorder.record(diff.planned)
    recorder.remember(user, diff)
    # Subscriptions are compared with the merged state once the changes above are in.
    subscribed = site.store.subscriptions(user)
    recorder.record(diff_subscriptions(user, folders, resolve_user(site.index, user),
                                       subscribed))


def scan_store(site: Site, *, now_ms: int, inventory: bool = False,
               progress: Callable[[str], None] | None = None) -> ScanStats:
    """Record every change in the store since the last scan (one transaction)."""
    stats = ScanStats()
    # Users outside this run's masks are neither scanned nor missed.
    known_users = set(site.config.users.select(site.index.folder_users()))
    users = site.config.users.select(site.store.users())
    with site.index.transaction():
        for user in users:
            if progress is not None:
                progress(user)
            scan_user(site, user, now_ms=now_ms, inventory=inventory, stats=stats)
            stats.users += 1
        site.index.advance_streams([site.stream])
    stats.warnings.extend(site.store.take_warnings())
    for user in sorted(known_users - set(users)):
        stats.warnings.append(
            f"user {user or '(store)'} is no longer in the store; nothing was deleted for "
            "them (remove the user at every site, or restore their mail directory)"
        )
    return stats
