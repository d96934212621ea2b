"""The scan's decisions: what the index remembers + what the disk holds -> changes.

Pure: no file system, no index, no clock. The scan (:mod:`operations.scan`)
gathers what these functions ask for -- folder listings, the index's rows of a
folder, the size and body of new files -- and records what they return. Each
step is a function, so the rules can be tested on values alone
(``tests/operations/test_scandiff.py``):

1. :func:`match_folders` pairs disk folders with remembered ones: by the GUID the
   server recorded, else by path; remembered folders left over have vanished.
2. :func:`folders_to_list`: a folder is listed when its stamp moved (or was
   racy) or it is new; an unchanged folder costs one stamp, nothing more.
3. :func:`match_renamed`: a new folder holding at least :data:`RENAME_OVERLAP`
   of a vanished folder's files is that folder, renamed on disk.
4. :func:`name_new_folders`: GUIDs for new folders: the server's, else derived
   from the name (copies of one store agree), else fresh.
5. :func:`diff_files`: per listed folder, new files, vanished files and flag
   changes; a new file with the key and size of a vanished one is a move, and
   its body is not read again.
6. :func:`diff_user`: the mailbox and message operations, in the order they
   are recorded, with the rows the index must remember afterwards.
7. :func:`diff_subscriptions`, once the changes above are folded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bundlesync.core.model import (
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
    derived_mailbox_guid,
)
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.state import MailboxState
from bundlesync.state.codec import encode_path
from bundlesync.state.index import FileRow, FolderRow
from bundlesync.stores.base import FolderInfo, FolderPath, StoredMessage

# A folder found on disk with no GUID of its own is taken as a rename of a vanished
# folder when at least this share of the vanished folder's files sit in it.
RENAME_OVERLAP = 0.5

Listing = Mapping[str, frozenset[str]]  # key -> flags of each file on disk in a folder
Recorded = Mapping[str, frozenset[str]]  # key -> flags of each file the index remembers


@dataclass(frozen=True, slots=True)
class IndexView:
    """What the index remembers of one user's mailboxes, read before the scan."""

    user: str
    folders: Mapping[str, FolderRow]  # by folder GUID
    mailboxes: Mapping[str, MailboxState]  # the registers, by mailbox GUID
    resolved: Mapping[str, ResolvedMailbox]

    def canonical(self, guid: str) -> str:
        found = self.resolved.get(guid)
        return guid if found is None else found.canonical

    def members(self, folder: str) -> list[str]:
        """The mailboxes a folder shows: its own and those merged into the same one."""
        return members(self.resolved, folder)


def members(resolved: Mapping[str, ResolvedMailbox], folder: str) -> list[str]:
    found = resolved.get(folder)
    canonical = folder if found is None else found.canonical
    return sorted({g for g, r in resolved.items() if r.canonical == canonical} | {folder})


@dataclass(frozen=True, slots=True)
class FolderMatch:
    """Disk folders paired with remembered ones."""

    matched: Mapping[str, FolderInfo]  # remembered GUID -> the folder on disk
    unmatched: Sequence[FolderInfo]  # on disk, not paired (new, or renamed on disk)
    vanished: Sequence[str]  # remembered GUIDs with no folder on disk


@dataclass(frozen=True, slots=True)
class FlagChange:
    row: FileRow
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class NewFile:
    folder: str  # folder GUID
    info: FolderInfo
    key: str


@dataclass(frozen=True, slots=True)
class FileDiff:
    """What changed among the files of the listed folders."""

    flag_changes: Sequence[FlagChange]
    new_files: Sequence[NewFile]
    gone: Sequence[FileRow]
    gone_by_key: Mapping[str, FileRow]

    def known_body(self, key: str, size: int) -> str | None:
        """The body of a new file that is a vanished one moved here (same key and
        size), so it need not be read; None if it must be read and hashed."""
        row = self.gone_by_key.get(key)
        return row.body if row is not None and row.size == size else None


@dataclass(frozen=True, slots=True)
class Arrived:
    """A new file as the scan found it: its message and the SHA-256 of its body."""

    message: StoredMessage
    body: str


@dataclass(frozen=True, slots=True)
class Planned:
    """Operations recorded together: under one timestamp when ``one_stamp`` (the
    mailboxes of a merged folder stay merged, rule 6), else each at its own."""

    ops: tuple[Operation, ...]
    one_stamp: bool = True


@dataclass
class UserDiff:
    """Everything one user's scan records, in order."""

    planned: list[Planned] = field(default_factory=list)
    folder_rows: list[FolderRow] = field(default_factory=list)
    file_rows: list[FileRow] = field(default_factory=list)
    dropped_files: list[FileRow] = field(default_factory=list)
    dropped_folders: list[str] = field(default_factory=list)

    def add(self, *ops: Operation) -> None:
        self.planned.append(Planned(tuple(ops)))

    def extend(self, other: UserDiff) -> None:
        """Append what ``other`` records after what this one does."""
        self.planned.extend(other.planned)
        self.folder_rows.extend(other.folder_rows)
        self.file_rows.extend(other.file_rows)
        self.dropped_files.extend(other.dropped_files)
        self.dropped_folders.extend(other.dropped_folders)


# -- 1-4: folders ------------------------------------------------------------------------


def match_folders(known: Mapping[str, FolderRow], disk: Sequence[FolderInfo], *,
                  wants: Callable[[FolderPath], bool]) -> FolderMatch:
    """Pair by the GUID the server recorded, else by path."""
    matched: dict[str, FolderInfo] = {}
    by_path = {row.path: guid for guid, row in known.items()}
    unmatched: list[FolderInfo] = []
    for info in disk:
        guid = None
        if info.guid in known and info.guid not in matched:
            guid = info.guid
        elif info.path in by_path and by_path[info.path] not in matched:
            guid = by_path[info.path]
        if guid is None:
            unmatched.append(info)
        else:
            matched[guid] = info
    vanished = [g for g in known if g not in matched and wants(known[g].path)]
    return FolderMatch(matched, unmatched, vanished)


def stamp_marks(info: FolderInfo) -> tuple[int, ...] | None:
    """The stamp to remember; a racy one is not, so the folder is listed again."""
    return None if info.stamp.racy else info.stamp.marks


def unchanged(known: Mapping[str, FolderRow], guid: str, info: FolderInfo) -> bool:
    marks = stamp_marks(info)
    return guid in known and marks is not None and known[guid].marks == marks


def folders_to_list(known: Mapping[str, FolderRow], match: FolderMatch) -> list[FolderInfo]:
    """Folders whose messages must be listed: new ones and those whose stamp moved."""
    moved = [info for guid, info in match.matched.items() if not unchanged(known, guid, info)]
    return [*moved, *match.unmatched]


def match_renamed(match: FolderMatch, listings: Mapping[FolderPath, Listing],
                  files: Mapping[str, Sequence[FileRow]]) -> FolderMatch:
    """Pair new folders with vanished ones by the files they hold (a rename on disk
    of a folder with no recorded GUID)."""
    matched = dict(match.matched)
    unmatched = list(match.unmatched)
    vanished = list(match.vanished)
    for info in list(unmatched):
        if not vanished:
            break
        keys = set(listings[info.path])
        best, best_share = None, 0.0
        for guid in vanished:
            old = {row.key for row in files[guid]}
            if old:
                share = len(old & keys) / len(old)
                if share > best_share:
                    best, best_share = guid, share
        if best is not None and best_share >= RENAME_OVERLAP:
            matched[best] = info
            vanished.remove(best)
            unmatched.remove(info)
    return FolderMatch(matched, unmatched, vanished)


def name_new_folders(match: FolderMatch, known: Collection[str], *, user: str, site_id: str,
                     now_ms: int) -> dict[str, FolderInfo]:
    """A GUID for each unmatched folder: the server's, else derived from the name (so
    copies of one store agree), else fresh (the derived one is taken)."""
    in_use = set(match.matched) | set(known)
    named: dict[str, FolderInfo] = {}
    for info in sorted(match.unmatched, key=lambda f: f.path):
        fresh = hashlib.sha256(
            f"{site_id}\0{now_ms}\0{user}\0{encode_path(info.path)}".encode()).hexdigest()[:32]
        candidates = [info.guid, derived_mailbox_guid(user, info.path), fresh]
        guid = next(g for g in candidates if g is not None and g not in in_use)
        in_use.add(guid)
        named[guid] = info
    return named


# -- 5: files --------------------------------------------------------------------------


def diff_files(known: Mapping[str, FolderRow], folders: Mapping[str, FolderInfo],
               listings: Mapping[FolderPath, Listing], recorded: Mapping[str, Recorded],
               rows_of: Callable[[Collection[tuple[str, str]]], Sequence[FileRow]]
               ) -> FileDiff:
    """New, vanished and re-flagged files of every folder whose stamp moved.

    A folder's names and flags are compared with what the index remembers of it
    (``recorded``, by folder GUID) in bulk; ``rows_of`` is asked once, for the full
    rows of only the files that vanished or changed flags, as (folder GUID, key)
    pairs (a 1 % change does not build a row for every file of every folder it
    touches).
    """
    new_files: list[NewFile] = []
    # Per folder, in path order: its re-flagged files (key -> flags) and vanished keys.
    differ: list[tuple[str, dict[str, frozenset[str]], list[str]]] = []
    for guid, info in sorted(folders.items(), key=lambda item: item[1].path):
        if unchanged(known, guid, info):
            continue
        listing = listings[info.path]
        had = recorded.get(guid, {})
        new_files.extend(NewFile(guid, info, key) for key in sorted(listing.keys() - had.keys()))
        if not had:
            continue
        reflagged = {key: flags for key, flags in listing.items()
                     if (was := had.get(key)) is not None and was != flags}
        vanished = sorted(had.keys() - listing.keys())
        if reflagged or vanished:
            differ.append((guid, reflagged, vanished))
    wanted = [(guid, key) for guid, reflagged, vanished in differ
              for key in (*reflagged, *vanished)]
    rows = {(row.folder, row.key): row for row in rows_of(wanted)} if wanted else {}
    flag_changes: list[FlagChange] = []
    gone: list[FileRow] = []
    for guid, reflagged, vanished in differ:
        flag_changes.extend(FlagChange(rows[(guid, key)], reflagged[key])
                            for key in sorted(reflagged) if (guid, key) in rows)
        gone.extend(rows[(guid, key)] for key in vanished if (guid, key) in rows)
    return FileDiff(flag_changes, new_files, gone, {row.key: row for row in gone})


# -- 6: the operations -------------------------------------------------------------------


def _parent_and_name(view: IndexView, path: FolderPath,
                     by_path: Mapping[FolderPath, str]) -> tuple[str | None, str]:
    for cut in range(len(path) - 1, 0, -1):
        parent = by_path.get(path[:cut])
        if parent is not None:
            return view.canonical(parent), "/".join(path[cut:])
    return None, "/".join(path)


def uidvalidity_at(now_ms: int) -> int:
    """Dovecot's convention for a new folder: the creation time in seconds."""
    return max(1, (now_ms // 1000) & 0xFFFFFFFF)


def _message_ref(user: str, row: FileRow) -> MessageRef:
    return MessageRef(MailboxRef(user, row.mailbox), row.guid, row.body)


def diff_user(view: IndexView, match: FolderMatch, new_folders: Mapping[str, FolderInfo],
              files_diff: FileDiff, *, arrived: Mapping[tuple[str, str], Arrived],
              vanished_files: Mapping[str, Sequence[FileRow]], now_ms: int) -> UserDiff:
    """The operations of one user's scan and the rows to remember afterwards.

    ``arrived`` holds each new file still there when read, by (folder GUID, key);
    ``vanished_files`` the remembered files of each vanished folder. The scan
    records the same operations in the same order in three parts (:func:`diff_head`,
    :func:`diff_adds` a batch of new files at a time, :func:`diff_removals`), so that
    a huge folder's adds are never all in memory at once.
    """
    diff = diff_head(view, match, new_folders, files_diff, now_ms=now_ms)
    diff.extend(diff_adds(view, files_diff.new_files, arrived))
    diff.extend(diff_removals(view, match, files_diff, vanished_files))
    return diff


def diff_head(view: IndexView, match: FolderMatch, new_folders: Mapping[str, FolderInfo],
              files_diff: FileDiff, *, now_ms: int) -> UserDiff:
    """What is recorded first: folder creates and renames, the folder rows, and the
    flag changes with their file rows."""
    diff = UserDiff()
    _diff_folders(diff, view, match, new_folders, now_ms=now_ms)
    user = view.user
    for change in files_diff.flag_changes:
        was = change.row.flags
        diff.add(FlagsChanged(_message_ref(user, change.row), added=change.flags - was,
                              removed=was - change.flags))
        diff.file_rows.append(change.row.with_flags(change.flags))
    return diff


def diff_adds(view: IndexView, new_files: Iterable[NewFile],
              arrived: Mapping[tuple[str, str], Arrived]) -> UserDiff:
    """The adds of ``new_files`` (any run of :attr:`FileDiff.new_files`, in its order)
    and their file rows; a file not in ``arrived`` was gone again when read."""
    diff = UserDiff()
    user = view.user
    for new in new_files:
        got = arrived.get((new.folder, new.key))
        if got is None:
            continue  # gone again since the listing: it never was, for us
        message = got.message
        mailbox = view.canonical(new.folder)
        ref = MessageRef(MailboxRef(user, mailbox), message.guid, got.body)
        diff.add(MessageAdded(ref, message.size, message.internal_date, message.flags))
        diff.file_rows.append(FileRow(user, new.folder, message.key, mailbox, message.guid,
                                      got.body, message.flags, message.size,
                                      message.internal_date))
    return diff


def diff_removals(view: IndexView, match: FolderMatch, files_diff: FileDiff,
                  vanished_files: Mapping[str, Sequence[FileRow]]) -> UserDiff:
    """What is recorded last: expunges of vanished files, then the folders deleted on
    disk (what this site had seen in them is expunged)."""
    diff = UserDiff()
    for row in files_diff.gone:
        diff.add(MessageExpunged(_message_ref(view.user, row)))
        diff.dropped_files.append(row)
    for guid in match.vanished:
        for row in vanished_files.get(guid, ()):
            diff.add(MessageExpunged(_message_ref(view.user, row)))
        for member in view.members(guid):
            if member in view.mailboxes:
                diff.add(MailboxDeleted(MailboxRef(view.user, member)))
        diff.dropped_folders.append(guid)
    return diff


def _diff_folders(diff: UserDiff, view: IndexView, match: FolderMatch,
                  new_folders: Mapping[str, FolderInfo], *, now_ms: int) -> None:
    """Creates and renames (parents before children), and the folder rows."""
    user = view.user
    everything = {**match.matched, **new_folders}
    by_path = {info.path: guid for guid, info in everything.items()}
    for guid, info in sorted(new_folders.items(), key=lambda item: item[1].path):
        resolved = view.resolved.get(guid)
        if guid not in view.mailboxes or resolved is None or not resolved.exists:
            parent, name = _parent_and_name(view, info.path, by_path)
            diff.add(MailboxCreated(MailboxRef(user, guid), parent, name,
                                    info.uidvalidity or uidvalidity_at(now_ms)))
    for guid, info in sorted(match.matched.items(), key=lambda item: item[1].path):
        if info.path == view.folders[guid].path:
            continue
        parent, name = _parent_and_name(view, info.path, by_path)
        state = view.mailboxes.get(view.canonical(guid))
        if state is None or (state.parent, state.name) != (parent, name):
            # Every mailbox merged into this folder is renamed, all at one timestamp,
            # so that they stay merged (docs/conflict-rules.md).
            diff.add(*(MailboxRenamed(MailboxRef(user, m), parent, name)
                       for m in view.members(guid)))
    for guid, info in sorted(everything.items(), key=lambda item: item[1].path):
        known = view.folders.get(guid)
        if known is None or known.path != info.path or not unchanged(view.folders, guid, info):
            diff.folder_rows.append(
                FolderRow(guid, info.path, stamp_marks(info), info.uidvalidity))


# -- 7: subscriptions --------------------------------------------------------------------


def diff_subscriptions(user: str, folders: Mapping[FolderPath, str],
                       resolved: Mapping[str, ResolvedMailbox],
                       subscribed: Collection[FolderPath]) -> list[Planned]:
    """Subscription changes: a folder's subscription on disk against the merged state
    (``resolved``, read after the scan's other changes were folded)."""
    planned: list[Planned] = []
    for path, guid in sorted(folders.items()):
        found = resolved.get(guid)
        canonical = resolved.get(guid if found is None else found.canonical)
        on_disk = path in subscribed
        if canonical is not None and canonical.subscribed != on_disk:
            planned.append(Planned(tuple(SubscriptionSet(MailboxRef(user, m), on_disk)
                                         for m in members(resolved, guid)), one_stamp=False))
    return planned
