"""Turning what changed in the store into local change records -- incrementally.

The state index remembers every folder (with its stamp: the mtimes of ``cur/``
and ``new/``) and every message file as last seen. A scan:

1. lists each user's folders (one directory read per user, one stamp per folder);
2. matches them to the folders it knew: by the GUID the server recorded, else by
   path, else -- for a folder renamed on disk with no ``dovecot-uidlist`` -- by
   the message files it holds; a matched folder at a new path is a rename;
3. lists the messages of a folder only when its stamp changed (or was racy:
   taken in the same clock tick as a change);
4. diffs each listed folder against the files it held: a new file is an add
   (its body hashed; a file that vanished from another folder with the same key
   and size is a move, and its body is not read again), a vanished file is an
   expunge, a renamed file is a flag change. ``new/`` -> ``cur/`` with the same
   flags is no change at all.

Every change is folded through :mod:`operations.ledger` in one transaction. At
``init`` the scan takes an *inventory*: its changes carry the inventory
timestamp, which any real change anywhere beats, so two sites set up on copies
of one store add nothing on their first exchange.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import cbor2

from bundlesync.core.model import (
    Change,
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
    Timestamp,
    derived_mailbox_guid,
)
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.state import inventory_timestamp
from bundlesync.operations.ledger import (
    fold_change,
    load_mailbox,
    path_from_key,
    path_key,
    resolve_user,
)
from bundlesync.operations.site import Site
from bundlesync.state.index import FileRow
from bundlesync.stores.base import FolderInfo, FolderPath
from bundlesync.stores.errors import MessageMissing

# A folder found on disk with no GUID of its own is taken as a rename of a vanished
# folder when at least this share of the vanished folder's files sit in it.
RENAME_OVERLAP = 0.5


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


def flags_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


def flags_of(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def encode_marks(info: FolderInfo) -> bytes | None:
    # A racy stamp is not remembered, so the folder is listed again next time.
    return None if info.stamp.racy else cbor2.dumps(list(info.stamp.marks))


class _UserScan:
    """The scan of one user's mailboxes, inside the caller's transaction."""

    def __init__(self, site: Site, user: str, *, now_ms: int, inventory: bool,
                 stats: ScanStats) -> None:
        self.site = site
        self.index = site.index
        self.store = site.store
        self.user = user
        self.now_ms = now_ms
        self.inventory = inventory
        self.stats = stats
        self.resolved: dict[str, ResolvedMailbox] = resolve_user(self.index, user)

    # -- helpers -------------------------------------------------------------------

    def stamp(self) -> Timestamp:
        """The timestamp of a change made now (the inventory's, during ``init``)."""
        if self.inventory:
            return inventory_timestamp(self.site.site_id)
        stamp = self.site.clock.tick(self.now_ms)
        self.site.save_clock()
        return stamp

    def record(self, op: Operation, *, ts: Timestamp | None = None) -> Change:
        change = self.site.new_change(op, now_ms=self.now_ms, ts=ts or self.stamp())
        fold_change(self.index, change)
        return change

    def members(self, folder: str) -> list[str]:
        """The mailboxes a folder shows: its own and those merged into the same one."""
        canonical = self.canonical(folder)
        merged = {g for g, r in self.resolved.items() if r.canonical == canonical}
        return sorted(merged | {folder})

    def canonical(self, folder_guid: str) -> str:
        resolved = self.resolved.get(folder_guid)
        return folder_guid if resolved is None else resolved.canonical

    def parent_and_name(self, path: FolderPath,
                        by_path: dict[FolderPath, str]) -> tuple[str | None, str]:
        for cut in range(len(path) - 1, 0, -1):
            parent = by_path.get(path[:cut])
            if parent is not None:
                return self.canonical(parent), "/".join(path[cut:])
        return None, "/".join(path)

    # -- the scan ------------------------------------------------------------------

    def run(self) -> None:
        known: dict[str, tuple[FolderPath, bytes | None]] = {
            guid: (path_from_key(path), marks)
            for guid, path, marks, _uidv in self.index.folders(self.user)
        }
        wants = self.site.config.filters.wants
        disk = [f for f in self.store.folders(self.user) if wants(f.path)]
        self.stats.folders += len(disk)
        listings: dict[FolderPath, dict[str, tuple[str, frozenset[str]]]] = {}

        def listing(info: FolderInfo) -> dict[str, tuple[str, frozenset[str]]]:
            # Names only: a file already known needs no stat; new ones get one below.
            if info.path not in listings:
                listings[info.path] = self.store.message_names(self.user, info.path)
                self.stats.folders_listed += 1
            return listings[info.path]

        # 1. match disk folders to known ones: recorded GUID, then path, then content.
        matched: dict[str, FolderInfo] = {}
        known_by_path = {path: guid for guid, (path, _m) in known.items()}
        unmatched: list[FolderInfo] = []
        for info in disk:
            guid = None
            if info.guid in known and info.guid not in matched:
                guid = info.guid
            elif info.path in known_by_path and known_by_path[info.path] not in matched:
                guid = known_by_path[info.path]
            if guid is None:
                unmatched.append(info)
            else:
                matched[guid] = info
        vanished = [g for g in known if g not in matched and wants(known[g][0])]
        for info in list(unmatched):
            if not vanished:
                break
            keys = set(listing(info))
            best, best_share = None, 0.0
            for guid in vanished:
                old = {row.key for row in self.index.files(self.user, guid)}
                if old:
                    share = len(old & keys) / len(old)
                    if share > best_share:
                        best, best_share = guid, share
            if best is not None and best_share >= RENAME_OVERLAP:
                matched[best] = info
                vanished.remove(best)
                unmatched.remove(info)

        # 2. GUIDs for new folders: the server's, else derived from the name (so copies
        #    of one store agree), else fresh (the derived one is taken by another folder).
        in_use = set(matched) | set(known)
        new_folders: dict[str, FolderInfo] = {}
        for info in sorted(unmatched, key=lambda f: f.path):
            candidates = [info.guid, derived_mailbox_guid(self.user, info.path),
                          hashlib.sha256(f"{self.site.site_id}\0{self.now_ms}\0{self.user}\0"
                                         f"{path_key(info.path)}".encode()).hexdigest()[:32]]
            guid = next(g for g in candidates if g is not None and g not in in_use)
            in_use.add(guid)
            new_folders[guid] = info
        by_path = {info.path: guid for guid, info in (matched | new_folders).items()}

        # 3. mailbox-level changes, parents before children.
        for guid, info in sorted(new_folders.items(), key=lambda item: item[1].path):
            parent, name = self.parent_and_name(info.path, by_path)
            state = load_mailbox(self.index, MailboxRef(self.user, guid))
            if state is None or not self._exists(guid):
                self.record(MailboxCreated(MailboxRef(self.user, guid), parent, name,
                                           info.uidvalidity or _uidvalidity(self.now_ms)))
                self.stats.mailboxes_created += 1
            self.index.put_folder(self.user, guid, path_key(info.path), None, info.uidvalidity)
        for guid, info in sorted(matched.items(), key=lambda item: item[1].path):
            old_path = known[guid][0]
            if info.path != old_path:
                parent, name = self.parent_and_name(info.path, by_path)
                state = load_mailbox(self.index, MailboxRef(self.user, self.canonical(guid)))
                if state is None or (state.parent, state.name) != (parent, name):
                    # Every mailbox merged into this folder is renamed, all at one
                    # timestamp, so that they stay merged (docs/conflict-rules.md).
                    stamp = self.stamp()
                    for member in self.members(guid):
                        self.record(MailboxRenamed(MailboxRef(self.user, member), parent, name),
                                    ts=stamp)
                    self.stats.mailboxes_renamed += 1

        # 4. message-level changes in every folder whose stamp moved.
        new_files: list[tuple[str, FolderInfo, str]] = []
        gone: dict[str, FileRow] = {}
        for guid, info in sorted((matched | new_folders).items(), key=lambda item: item[1].path):
            marks = encode_marks(info)
            if guid in matched and marks is not None and known[guid][1] == marks:
                if info.path != known[guid][0]:
                    self.index.put_folder(self.user, guid, path_key(info.path), marks,
                                          info.uidvalidity)
                continue
            rows = {row.key: row for row in self.index.files(self.user, guid)}
            for key, (_guid, flags) in sorted(listing(info).items()):
                row = rows.pop(key, None)
                if row is None:
                    new_files.append((guid, info, key))
                elif flags_of(row.flags) != flags:
                    was = flags_of(row.flags)
                    self.record(FlagsChanged(_ref(self.user, row), added=flags - was,
                                             removed=was - flags))
                    self.stats.flag_changes += 1
                    self.index.put_file(FileRow(
                        row.user, row.folder, row.key, row.mailbox, row.guid, row.body,
                        flags_text(flags), row.size, row.internal_date))
            for row in rows.values():
                gone[row.key] = row
            self.index.put_folder(self.user, guid, path_key(info.path), marks, info.uidvalidity)

        for guid, info, key in new_files:
            try:
                message = self.store.message_info(self.user, info.path, key)
            except MessageMissing:
                continue  # gone again since the listing: it never was, for us
            limit = self.site.config.limits.max_message_size
            if message.size > limit:
                # Never read, never sent: one huge file must not stop every export.
                self.stats.warnings.append(
                    f"skipped message {key} of user {self.user or '(store)'} in folder "
                    f"{'/'.join(info.path)}: {message.size} bytes, above the limit of "
                    f"{limit} ([limits] max_message_size)")
                continue
            moved = gone.get(message.key)
            if moved is not None and moved.size == message.size:
                body = moved.body
            else:
                data = self.store.read_body(self.user, info.path, message.key)
                body = hashlib.sha256(data).hexdigest()
                self.stats.bytes_hashed += len(data)
            mailbox = self.canonical(guid)
            ref = MessageRef(MailboxRef(self.user, mailbox), message.guid, body)
            self.record(MessageAdded(ref, message.size, message.internal_date, message.flags))
            self.stats.added += 1
            self.index.put_file(FileRow(self.user, guid, message.key, mailbox, message.guid, body,
                                        flags_text(message.flags), message.size,
                                        message.internal_date))
        for row in gone.values():
            self.record(MessageExpunged(_ref(self.user, row)))
            self.stats.expunged += 1
            self.index.drop_file(self.user, row.folder, row.key)

        # 5. folders deleted on disk: what this site had seen in them is expunged.
        for guid in vanished:
            for row in self.index.files(self.user, guid):
                self.record(MessageExpunged(_ref(self.user, row)))
                self.stats.expunged += 1
            for member in self.members(guid):
                if load_mailbox(self.index, MailboxRef(self.user, member)) is not None:
                    self.record(MailboxDeleted(MailboxRef(self.user, member)))
                    self.stats.mailboxes_deleted += 1
            self.index.drop_folder(self.user, guid)

        # 6. subscriptions.
        self.resolved = resolve_user(self.index, self.user)
        subscribed = self.store.subscriptions(self.user)
        for path, guid in sorted(by_path.items()):
            canonical = self.canonical(guid)
            resolved = self.resolved.get(canonical)
            on_disk = path in subscribed
            if resolved is not None and resolved.subscribed != on_disk:
                for member in self.members(guid):
                    self.record(SubscriptionSet(MailboxRef(self.user, member), on_disk))
                self.stats.subscriptions += 1

    def _exists(self, guid: str) -> bool:
        resolved = self.resolved.get(guid)
        return resolved is not None and resolved.exists


def _ref(user: str, row: FileRow) -> MessageRef:
    return MessageRef(MailboxRef(user, row.mailbox), row.guid, row.body)


def _uidvalidity(now_ms: int) -> int:
    # Dovecot's convention: the creation time in seconds.
    return max(1, (now_ms // 1000) & 0xFFFFFFFF)


def scan_store(site: Site, *, now_ms: int, inventory: bool = False,
               progress: Callable[[str], None] | None = None) -> ScanStats:
    """Record every change in the store since the last scan (one transaction)."""
    stats = ScanStats()
    known_users = set(site.index.folder_users())
    users = site.store.users()
    with site.index.transaction():
        for user in users:
            if progress is not None:
                progress(user)
            _UserScan(site, user, now_ms=now_ms, inventory=inventory, stats=stats).run()
            stats.users += 1
        site.index.advance_streams([site.stream])
    stats.warnings.extend(site.store.take_warnings())
    for user in sorted(known_users - set(users)):
        stats.warnings.append(
            f"user {user or '(store)'} is no longer in the store; nothing was deleted for "
            "them (remove the user at every site, or restore their mail directory)"
        )
    return stats
