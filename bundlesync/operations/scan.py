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

After an apply, :func:`keep_applied_stamps` remembers the new stamp of each
folder the apply changed whose files it finds exactly as the index records
them, so the next scan does not list again what only bundlesync changed.

At ``init`` the scan takes an *inventory*: its changes carry the inventory
timestamp, which any real change anywhere beats, so two sites set up on copies
of one store add nothing on their first exchange.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bundlesync.core.model import (
    Change,
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
from bundlesync.errors import StoreError
from bundlesync.operations import failpoints
from bundlesync.operations.inventory import InventoryWritten, record_inventory
from bundlesync.operations.ledger import fold_changes, resolve_user, user_mailboxes
from bundlesync.operations.scandiff import (
    Arrived,
    FileDiff,
    FolderMatch,
    IndexView,
    Listing,
    NewFile,
    Planned,
    Recorded,
    UserDiff,
    diff_adds,
    diff_files,
    diff_head,
    diff_removals,
    diff_subscriptions,
    folders_to_list,
    match_folders,
    match_renamed,
    name_new_folders,
    unchanged,
)
from bundlesync.operations.site import Site
from bundlesync.state.index import FileRow, FolderRow
from bundlesync.stores.base import FolderInfo, FolderPath, FolderStamp, StoredMessage
from bundlesync.stores.errors import MessageMissing

# Changes made before their dots are checked against the log in one query (bounded,
# so that an inventory of a huge folder does not hold all its changes at once).
FOLD_BATCH = 1000
# New files read, diffed and recorded at a time (each batch in bulk statements).
ADD_BATCH = 2000


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
        self.recorded: dict[str, Recorded] = {}
        self.files: dict[str, Sequence[FileRow]] = {}

    def list_folders(self, paths: Sequence[FolderPath]) -> None:
        for path in paths:
            if path not in self.listings:
                # Names only: a file already known needs no stat; new ones get one below.
                self.listings[path] = self.site.store.message_flags(self.user, path)
                self.stats.folders_listed += 1

    def load_recorded(self, guids: Iterable[str]) -> None:
        """Keys and flags of the files the index remembers in these folders."""
        for guid in guids:
            if guid not in self.recorded:
                self.recorded[guid] = self.site.index.file_flags(self.user, guid)

    def load_files(self, guids: Sequence[str]) -> None:
        """Every row of these folders (vanished ones: each of their files is expunged)."""
        for guid in guids:
            if guid not in self.files:
                self.files[guid] = self.site.index.files(self.user, guid)

    def rows_of(self, wanted: Collection[tuple[str, str]]) -> Sequence[FileRow]:
        return self.site.index.files_by_key(self.user, wanted)

    def arrivals(self, files_diff: FileDiff,
                 new_files: Sequence[NewFile]) -> dict[tuple[str, str], Arrived]:
        """Size, date and body hash of each of ``new_files`` still there."""
        found: dict[tuple[str, str], Arrived] = {}
        store = self.site.store
        limit = self.site.config.limits.max_message_size
        # A file that may be a vanished one moved here is looked at first: if it is,
        # its body is not read. The others (at init, every file) are read folder by
        # folder, each opened once.
        by_folder: dict[tuple[str, FolderPath], list[str]] = {}
        for new in new_files:
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


@dataclass(frozen=True, slots=True)
class UserPlan:
    """One user's scan once every listed folder was diffed: what :func:`scan_user`
    records, in three parts (see :func:`scandiff.diff_user`)."""

    view: IndexView
    match: FolderMatch
    new_folders: Mapping[str, FolderInfo]
    files_diff: FileDiff
    vanished_files: Mapping[str, Sequence[FileRow]]
    folders: Mapping[FolderPath, str]  # every folder of the user: path -> GUID


def plan_user(site: Site, user: str, *, now_ms: int, stats: ScanStats,
              gather: _Gatherer) -> UserPlan:
    """List what moved and diff it against the index (nothing is recorded yet)."""
    index = site.index
    states = user_mailboxes(index, user)
    view = IndexView(user, {row.guid: row for row in index.folders(user)}, states,
                     resolve_mailboxes(states, live=index.live_mailboxes(user)))
    wants = site.config.filters.wants
    disk = [f for f in site.store.folders(user) if wants(f.path)]
    stats.folders += len(disk)
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
    gather.load_recorded(g for g, info in everything.items()
                         if g in view.folders and not unchanged(view.folders, g, info))
    gather.load_files(match.vanished)
    files_diff = diff_files(view.folders, everything, gather.listings, gather.recorded,
                            gather.rows_of)
    vanished = {guid: gather.files[guid] for guid in match.vanished if guid in gather.files}
    # What differs is in files_diff now; a huge folder's listing would otherwise stay
    # in memory through the whole recording.
    gather.listings.clear()
    gather.recorded.clear()
    return UserPlan(view, match, new_folders, files_diff, vanished,
                    {info.path: guid for guid, info in everything.items()})


# -- record ------------------------------------------------------------------------------


class _Recorder:
    """Gives each operation its dot and timestamp and folds it (caller's transaction)."""

    def __init__(self, site: Site, *, now_ms: int, inventory: bool, stats: ScanStats) -> None:
        self.site = site
        self.now_ms = now_ms
        self.inventory = inventory
        self.stats = stats
        self.written = InventoryWritten() if inventory else None

    def stamp(self) -> Timestamp:
        """The timestamp of a change made now (the inventory's, during ``init``)."""
        if self.inventory:
            return inventory_timestamp(self.site.site_id)
        # Saved by new_change, which every stamp taken here goes through.
        return self.site.clock.tick(self.now_ms)

    def record(self, planned: Sequence[Planned]) -> None:
        if self.inventory:
            record_inventory(self.site, planned, count=self.stats.count, written=self.written)
            return
        changes: list[Change] = []
        for group in planned:
            shared = self.stamp() if group.one_stamp else None
            for op in group.ops:
                ts = shared if shared is not None else self.stamp()
                changes.append(self.site.new_change(op, now_ms=self.now_ms, ts=ts))
            self.stats.count(group)
            if len(changes) >= FOLD_BATCH:
                fold_changes(self.site.index, changes)
                changes = []
        # Folded in the order made; their dots are checked in bulk.
        fold_changes(self.site.index, changes)

    def apply(self, user: str, diff: UserDiff) -> None:
        """Record one part of a user's diff and remember its rows."""
        self.record(diff.planned)
        self.remember(user, diff)

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
    """Gather, diff and record one user (inside the caller's transaction).

    New files are read, diffed and recorded :data:`ADD_BATCH` at a time: one user's
    arrivals, their changes and their rows are never all in memory at once (an
    inventory of a folder of 100,000 messages would hold about 2 KB each).
    """
    gather = _Gatherer(site, user, stats)
    plan = plan_user(site, user, now_ms=now_ms, stats=stats, gather=gather)
    view, files_diff = plan.view, plan.files_diff
    recorder = _Recorder(site, now_ms=now_ms, inventory=inventory, stats=stats)
    recorder.apply(user, diff_head(view, plan.match, plan.new_folders, files_diff,
                                   now_ms=now_ms))
    new_files = files_diff.new_files
    for start in range(0, len(new_files), ADD_BATCH):
        batch = new_files[start:start + ADD_BATCH]
        recorder.apply(user, diff_adds(view, batch, gather.arrivals(files_diff, batch)))
    recorder.apply(user, diff_removals(view, plan.match, files_diff, plan.vanished_files))
    # Subscriptions are compared with the merged state once the changes above are in.
    subscribed = site.store.subscriptions(user)
    recorder.record(diff_subscriptions(user, plan.folders, resolve_user(site.index, user),
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


# -- after an apply: keep the stamps of folders only bundlesync changed -----------------

# How long to let young stamps settle before they are checked: just above the racy
# window of a file system with sub-second mtimes (stores.folder_files.FINE_RACY_NS).
# On a coarse file system they stay racy and are left to the next scan. The wait pays
# only when the next scan would list much: that many young folders, or files in them.
SETTLE_S = 0.06
SETTLE_MIN_FOLDERS = 8
SETTLE_MIN_FILES = 2000


def keep_applied_stamps(site: Site, users: Iterable[str],
                        touched: Collection[tuple[str, FolderPath]] | None = None) -> int:
    """Remember the new stamp of each folder whose files are as the index records them.

    Called right after an apply's last write, with the (user, folder) pairs the apply
    changed in the store when it knows them: only those are checked. A folder the
    apply did not touch but whose stamp moved was changed by someone else, and its
    listing could only differ from the index: the next scan lists it anyway, so
    listing it here would be wasted (an export applying what its last scan recorded
    changes no folder at all). A folder whose stamp moved since the
    index recorded it (the apply changed it -- or someone else did) is checked:
    stamp, list the names, stamp again; the stamp is kept only if it was not racy,
    did not move across the listing, and the listing equals the index's files
    (keys and flags, what the scan compares). A delivery at any moment is then
    either in the listing (a mismatch: not kept), or after the first stamp was read
    (a moved mark: not kept, or the mark kept is older than the delivery and the
    next scan lists the folder). The argument is in docs/architecture.md, "Folder
    stamps". Returns how many stamps were kept.
    """
    users = list(users)
    if not users:
        return 0
    failpoints.reached("stamps")
    index, store = site.index, site.store
    wants = site.config.filters.wants
    # The stamp read here is the first of the check's two for a settled folder: any
    # change after it moves the second one or shows in the listing between them.
    candidates: list[tuple[str, FolderRow, FolderStamp | None]] = []
    young: list[tuple[str, FolderRow, FolderStamp | None]] = []
    for user in users:
        for row in index.folders(user):
            if not wants(row.path) or (touched is not None and (user, row.path) not in touched):
                continue
            try:
                stamp = store.folder_stamp(user, row.path)
            except StoreError:
                continue
            if stamp is None or stamp.marks == row.marks:
                continue
            if stamp.racy:
                young.append((user, row, None))  # read again once settled
            else:
                candidates.append((user, row, stamp))
    young_seen = time.monotonic()
    settle = bool(young) and _worth_settling(site, [(u, r) for u, r, _ in young])
    if not candidates and not settle:
        return 0
    kept = 0
    with index.transaction():
        kept += _keep_checked(site, candidates)
        if settle:
            # The settled folders were checked meanwhile: wait only for what is left.
            left = SETTLE_S - (time.monotonic() - young_seen)
            if left > 0:
                time.sleep(left)
            kept += _keep_checked(site, young)
    return kept


def _keep_checked(site: Site, folders: Sequence[tuple[str, FolderRow, FolderStamp | None]]
                  ) -> int:
    kept = 0
    for user, row, before in folders:
        try:
            marks = _checked_stamp(site, user, row, before)
        except StoreError:
            continue  # changing under us, or unreadable: the next scan lists it
        if marks is not None:
            site.index.set_folder_marks(user, row.guid, marks)
            kept += 1
    return kept


def _worth_settling(site: Site, young: Sequence[tuple[str, FolderRow]]) -> bool:
    """Whether the next scan would list enough in these young folders to wait for
    their stamps to settle (a small import leaves them to the next scan)."""
    if len(young) >= SETTLE_MIN_FOLDERS:
        return True
    files = sum(site.index.count_folder_files(user, row.guid) for user, row in young)
    return files >= SETTLE_MIN_FILES


def _checked_stamp(site: Site, user: str, row: FolderRow,
                   before: FolderStamp | None = None) -> tuple[int, ...] | None:
    """The folder's stamp if its names match the index across two equal, settled
    stamps (the first one read now unless given); else None (the next scan lists it)."""
    store = site.store
    if before is None:
        before = store.folder_stamp(user, row.path)
    if before is None or before.racy:
        return None
    names = store.message_flags(user, row.path)
    failpoints.reached("stamp-listed")
    after = store.folder_stamp(user, row.path)
    if after is None or after.marks != before.marks:
        return None
    # Keys and flags, compared as two dicts at once.
    return before.marks if site.index.file_flags(user, row.guid) == names else None
