"""Bringing the store in line with the merged state: the journaled apply step.

Every key a change touched is marked *pending* in the same transaction that
folded the change (``operations.ledger``). This step works through the pending
keys, user by user:

1. resolve the user's mailbox tree from the registers and plan the folder
   actions against the folders as last seen (``core.plan.plan_folders``):
   creates and renames first, parents before children;
2. for each pending message instance, compare what the registers want (alive,
   in which folder, with which flags) with the files that hold it, and add, move,
   re-flag or remove -- each action idempotent on the store;
3. delete the folders the plan removes (only when empty: a message delivered
   meanwhile keeps its folder), and write the subscriptions.

After each store action the index records its effect and clears that pending
mark, so a run killed at any point is finished by the next run (every run
starts here) with the result of one clean run: the store actions are
idempotent, and what the index did not record is done again harmlessly.
With ``dry_run`` nothing is done; the report says what would be.

Users with little pending work are applied together (:func:`_apply_together`):
the placements of all of them in one store batch and one transaction, then
their removals in another, where each user alone costs a sync of the file
system and three commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from bundlesync.core.model import SYSTEM_FLAGS, MailboxRef, MessageRef
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.plan import CreateFolder, DeleteFolder, RenameFolder, plan_folders
from bundlesync.core.state import MessageState
from bundlesync.errors import StoreError
from bundlesync.operations import failpoints
from bundlesync.operations.bodies import BodyFinder
from bundlesync.operations.ledger import load_message, resolve_user
from bundlesync.operations.report import ApplyReport
from bundlesync.operations.scan import keep_applied_stamps
from bundlesync.operations.site import Site
from bundlesync.state.codec import decode_message
from bundlesync.state.index import FileRow, FolderRow
from bundlesync.stores.base import INBOX, FolderPath, StoredMessage
from bundlesync.stores.errors import (
    ItemRefused,
    KeyInUse,
    MessageMissing,
    OverLimit,
    UnsafeName,
)
from bundlesync.stores.names import new_message_key, storable_flags, storable_path

APPLY_BATCH = 500


@dataclass
class _Folders:
    """The user's folders as last seen: folder GUID <-> path."""

    by_guid: dict[str, FolderPath] = field(default_factory=dict)
    # path -> the first GUID at it, made again after a change (asked once per message).
    at: dict[FolderPath, str] | None = None

    def guid_at(self, path: FolderPath) -> str | None:
        if self.at is None:
            self.at = {}
            for guid, where in self.by_guid.items():
                self.at.setdefault(where, guid)
        return self.at.get(path)

    def put(self, guid: str, path: FolderPath) -> None:
        self.by_guid[guid] = path
        self.at = None

    def drop(self, guid: str) -> None:
        del self.by_guid[guid]
        self.at = None


class _UserApply:
    def __init__(self, site: Site, user: str, *, dry_run: bool, report: ApplyReport,
                 tick: Callable[[], None] | None = None,
                 bodies: BodyFinder | None = None) -> None:
        self.tick = tick
        self.site = site
        self.index = site.index
        self.store = site.store
        self.user = user
        self.dry_run = dry_run
        self.report = report
        # Paths as this store holds them: a name it cannot hold is stored under a
        # deterministic storable one (stores.names), which the index then records.
        self.resolved: dict[str, ResolvedMailbox] = {
            guid: replace(r, path=storable_path(r.path))
            for guid, r in resolve_user(self.index, user).items()
        }
        self.folders = _Folders({
            row.guid: row.path for row in self.index.folders(user)
        })
        self.bodies = bodies if bodies is not None else BodyFinder(site)
        self.bodies.use_folders(user, self.folders.by_guid)
        self.wants: dict[FolderPath, bool] = {}  # the filter's answers (asked per message)
        self.created_folders = 0
        self.held_back: set[FolderPath] = set()
        self.held_messages = 0
        # What a batch reads ahead (one statement per mailbox or folder, not one per
        # message) and the file rows it records at its end (see prefetch, record).
        self.prefetched = False
        self.states: dict[MessageRef, MessageState] = {}
        self.holders: dict[tuple[str, str, str], list[FileRow]] = {}
        self.taken: dict[str, set[str]] = {}  # folder GUID -> keys of files in it
        self.recording: dict[tuple[str, str], FileRow] = {}
        # What begin() found to do, for apply_items() and finish().
        self.late: list[DeleteFolder] = []
        self.placing: list[tuple[str, str, str]] = []
        self.removing: list[tuple[str, str, str]] = []

    def wanted(self, path: FolderPath) -> bool:
        wants = self.wants.get(path)
        if wants is None:
            wants = self.wants[path] = self.site.config.filters.wants(path)
        return wants

    def held(self, mailbox: str, guid: str, body: str, *, any_excluded: bool = True
             ) -> FolderPath | None:
        """The excluded mailbox that holds this instance back, if any.

        Filters hold back, they never drop (docs/conflict-rules.md, "Filters"): an
        instance of an excluded mailbox, or with a file in an excluded folder, is
        neither placed nor removed; it stays pending until the filter is lifted.
        ``any_excluded`` False says no folder of the user is excluded: its files
        need not be looked up.
        """
        resolved = self.resolved.get(mailbox)
        if resolved is not None:
            canonical = self.resolved.get(resolved.canonical, resolved)
            if not self.wanted(canonical.path):
                return canonical.path
        if not any_excluded:
            return None
        for row in self.index.files_of_instance(self.user, mailbox, guid, body):
            where = self.folders.by_guid.get(row.folder)
            if where is not None and not self.wanted(where):
                return where
        return None

    def held_folders(self) -> set[FolderPath]:
        """Excluded mailboxes the store does not show as the merged state has them."""
        return {
            r.path for guid, r in self.resolved.items()
            if r.canonical == guid and r.exists and not self.wanted(r.path)
            and self.folders.guid_at(r.path) != guid
        }

    def target(self, mailbox: str) -> ResolvedMailbox | None:
        resolved = self.resolved.get(mailbox)
        if resolved is None:
            return None
        canonical = self.resolved.get(resolved.canonical)
        if canonical is None or not canonical.exists or not self.wanted(canonical.path):
            return None
        return canonical

    # -- folders -------------------------------------------------------------------

    def plan(self) -> tuple[list[CreateFolder | RenameFolder], list[DeleteFolder]]:
        before: dict[str, ResolvedMailbox] = {}
        for guid, path in sorted(self.folders.by_guid.items(), key=lambda item: item[1]):
            if not self.wanted(path):
                continue
            resolved = self.resolved.get(guid)
            canonical = guid if resolved is None else resolved.canonical
            if canonical in before:
                continue  # a second folder of a merged mailbox: emptied below, then deleted
            before[canonical] = ResolvedMailbox(
                guid=canonical, path=path, canonical=canonical, exists=True, subscribed=False,
                uidvalidity=0, special_use=None,
            )
        after = {
            guid: r for guid, r in self.resolved.items()
            if r.canonical == guid and r.exists and self.wanted(r.path)
        }
        early: list[CreateFolder | RenameFolder] = []
        late: list[DeleteFolder] = []
        for action in plan_folders(self.user, before, after):
            if isinstance(action, DeleteFolder):
                late.append(action)
            elif isinstance(action, CreateFolder | RenameFolder):
                early.append(action)
            # SetSubscribed: subscriptions are written once, at the end (subscriptions()).
        return early, late

    def do_folder(self, action: CreateFolder | RenameFolder) -> None:
        """One folder action; a failure is reported for that folder alone."""
        path = action.path if isinstance(action, CreateFolder) else action.new
        try:
            self._do_folder(action)
        except ItemRefused as exc:
            self.report.fail_item(self.user, f"mailbox {'/'.join(path)}", exc)

    def _do_folder(self, action: CreateFolder | RenameFolder) -> None:
        limits = self.site.config.limits
        path = action.path if isinstance(action, CreateFolder) else action.new
        if len(path) > limits.max_folder_depth:
            raise OverLimit(f"mailbox {'/'.join(path)[:200]} is {len(path)} levels deep; "
                            f"this site takes at most {limits.max_folder_depth}")
        if isinstance(action, CreateFolder):
            if action.path != INBOX:  # every Maildir has one
                self.created_folders += 1
                if self.created_folders > limits.max_new_folders:
                    raise OverLimit(f"more than {limits.max_new_folders} new mailboxes for "
                                    "one user in one run")
            if self.dry_run:
                self.report.mailbox(self.user, action.path, "created")
                self.folders.put(action.guid, action.path)
                return
            self.store.create_folder(self.user, action.path, guid=action.guid,
                                     uidvalidity=action.uidvalidity)
            self.report.mailbox(self.user, action.path, "created")
            failpoints.reached("folder")
            self.index.put_folder(self.user, FolderRow(action.guid, action.path, None,
                                                       action.uidvalidity))
            self.folders.put(action.guid, action.path)
            return
        if not self.dry_run:
            old_gone = self.store.folder_stamp(self.user, action.old) is None
            new_there = self.store.folder_stamp(self.user, action.new) is not None
            if not (old_gone and new_there):  # else: done before a crash
                self.store.rename_folder(self.user, action.old, action.new)
                failpoints.reached("folder")
        self.report.mailbox(self.user, action.new, "renamed", old=action.old)
        size = len(action.old)
        for guid, path in list(self.folders.by_guid.items()):
            if path[:size] == action.old:
                moved = action.new + path[size:]
                self.folders.put(guid, moved)
                if not self.dry_run:
                    self.index.put_folder(self.user, FolderRow(guid, moved, None, None))

    def delete_folder(self, action: DeleteFolder) -> None:
        guid = self.folders.guid_at(action.path)
        self.report.mailbox(self.user, action.path, "deleted")
        if self.dry_run:
            return
        try:
            self.store.delete_folder(self.user, action.path)
        except StoreError as exc:
            # Mail was delivered into it meanwhile: keep it; the next scan records it
            # and the merge keeps the mailbox for it (nothing lost).
            self.report.warn(f"{self.user or '(store)'}: kept {'/'.join(action.path)}: {exc}")
            return
        if guid is not None:
            self.index.drop_folder(self.user, guid)
            self.folders.drop(guid)

    # -- messages ------------------------------------------------------------------

    def free_key(self, folder: str, ref: MessageRef) -> str:
        taken = self.taken.get(folder)
        if taken is not None:
            free = ref.guid not in taken
        else:
            free = not self.index.has_file(self.user, folder, ref.guid)
        return ref.guid if free else f"{ref.guid}-{ref.body[:16]}"

    def load_states(self, items: Sequence[tuple[str, str, str]]) -> dict[MessageRef,
                                                                        MessageState]:
        """The merged states of ``items``, one statement per mailbox."""
        guids: dict[str, set[str]] = {}
        for mailbox, guid, _body in items:
            guids.setdefault(mailbox, set()).add(guid)
        states: dict[MessageRef, MessageState] = {}
        for mailbox, some in guids.items():
            box = MailboxRef(self.user, mailbox)
            for guid, body, blob in self.index.load_messages(self.user, mailbox, some):
                ref = MessageRef(box, guid, body)
                states[ref] = decode_message(ref, blob)
        return states

    def alive(self, items: Sequence[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """Which of ``items`` the merged state holds alive, one statement per mailbox."""
        guids: dict[str, set[str]] = {}
        for mailbox, guid, _body in items:
            guids.setdefault(mailbox, set()).add(guid)
        return {(mailbox, guid, body) for mailbox, some in guids.items()
                for guid, body in self.index.alive_messages(self.user, mailbox, some)}

    def prefetch(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Read what ``message`` needs for a batch of instances in bulk: their states,
        the files holding them, and which of their names the target folders hold.

        Nothing in a batch changes another instance's state or files, so what is
        read here stays true while the batch runs; the names it takes are added.
        """
        self.states = self.load_states(items)
        self.prefetched = True
        self.holders = {}
        guids: dict[str, set[str]] = {}
        for mailbox, guid, _body in items:
            guids.setdefault(mailbox, set()).add(guid)
        for mailbox, some in guids.items():
            for row in self.index.files_of_instances(self.user, mailbox, some):
                self.holders.setdefault((row.mailbox, row.guid, row.body), []).append(row)
        wanted: dict[str, set[str]] = {}
        for mailbox, guid, body in items:
            state = self.states.get(MessageRef(MailboxRef(self.user, mailbox), guid, body))
            target = self.target(mailbox) if state is not None and state.alive else None
            folder = None if target is None else self.folders.guid_at(target.path)
            if folder is not None:
                wanted.setdefault(folder, set()).add(guid)
        self.taken = {folder: self.index.taken_keys(self.user, folder, keys)
                      for folder, keys in wanted.items()}
        if not self.dry_run:
            self.bodies.expect(body for _mailbox, _guid, body in items)

    def put_file(self, row: FileRow) -> None:
        """Record a file at the batch's end (``record``), in the batch's transaction."""
        self.recording[(row.folder, row.key)] = row
        taken = self.taken.get(row.folder)
        if taken is not None:
            taken.add(row.key)

    def drop_file(self, folder: str, key: str) -> None:
        self.record()  # in order with the rows waiting
        self.index.drop_file(self.user, folder, key)
        taken = self.taken.get(folder)
        if taken is not None:
            taken.discard(key)

    def record(self) -> None:
        """Record the files waiting, with one statement."""
        if self.recording:
            self.index.put_files(self.recording.values())
            self.recording = {}

    def end_batch(self) -> None:
        self.record()
        self.states, self.holders, self.taken = {}, {}, {}
        self.prefetched = False

    def reflag(self, row: FileRow, path: FolderPath, flags: frozenset[str]) -> None:
        if row.flags == flags:
            return
        # A keyword this store cannot hold is stored under its storable name; the
        # file then carries that one (a file that holds the original keeps it).
        flags = storable_flags(flags, system=SYSTEM_FLAGS)
        if row.flags == flags:
            return
        if self.dry_run:
            self.report.message(self.user, path, "flags")
            return
        try:
            stored = self.store.set_flags(self.user, path, row.key, flags)
        except MessageMissing:
            # Expunged here meanwhile: the next scan records that expunge (the row
            # stays, so the scan sees the file vanish), and the merge decides.
            self.report.warn(f"{self.user or '(store)'}: {row.key} vanished during the import")
            return
        except ItemRefused as exc:
            self.report.fail_item(self.user, f"{'/'.join(path)} message {row.key}", exc)
            return
        self.report.message(self.user, path, "flags")
        failpoints.reached("apply")
        self.put_file(row.with_flags(stored))

    def deliver(self, path: FolderPath, key: str, data: bytes, flags: frozenset[str],
                internal_date: int, *, source: str | None = None) -> StoredMessage:
        return self.store.add_message(self.user, path, key=key, data=data, flags=flags,
                                      internal_date=internal_date, source=source)

    def place(self, ref: MessageRef, state: MessageState, folder: str | None, path: FolderPath,
              holders: list[FileRow]) -> bool:
        """Deliver the instance into its folder; False if its body is not here yet (or
        it cannot be delivered: reported, and it stays pending)."""
        if self.dry_run:
            self.report.message(self.user, path, "added", size=state.size)
            return True
        assert folder is not None
        # The bytes are read (and checked) even when the store will link the spool
        # file instead of writing them: the size limit and the names' S=/W= need them.
        found = self.bodies.take(ref.body, first=holders)
        data, source = (None, None) if found is None else found
        limit = self.site.config.limits.max_message_size
        if data is not None and len(data) > limit:
            # The bytes count, not the size the change claims.
            self.report.fail_item(
                self.user, f"{'/'.join(path)} message {ref.guid}",
                OverLimit(f"message {ref.guid} of user {self.user or '(store)'} in "
                          f"{'/'.join(path)} is {len(data)} bytes; this site takes at most "
                          f"{limit} bytes per message ([limits] max_message_size)"))
            return False
        if data is None:
            # A peer assumed we hold it, but our copy went meanwhile: ask for it.
            self.report.missing_body(self.user, path, ref)
            self.index.want(ref.body)
            return False
        flags = state.effective_flags()
        keys = [self.free_key(folder, ref), f"{ref.guid}-{ref.body[:16]}", ""]
        for key in keys:
            try:
                # The last resort, a fresh name, is made only when it is needed.
                stored = self.deliver(path, key or new_message_key(now_ns=time.time_ns()),
                                      data, flags, state.internal_date, source=source)
                break
            except (KeyInUse, UnsafeName) as exc:
                # The name holds other bytes here (rule 8), or its S=/W= fields do not
                # fit these bytes: keep the message under a name of its own.
                if not key:
                    self.report.fail_item(self.user, f"{'/'.join(path)} message {ref.guid}",
                                          exc)
                    return False
            except ItemRefused as exc:
                self.report.fail_item(self.user, f"{'/'.join(path)} message {ref.guid}", exc)
                return False
        self.report.message(self.user, path, "added", size=len(data))
        failpoints.reached("apply")
        self.put_file(FileRow(self.user, folder, stored.key, ref.mailbox.guid, ref.guid,
                              ref.body, stored.flags, stored.size, state.internal_date))
        return True

    def message(self, mailbox: str, guid: str, body: str) -> bool:
        """Reconcile one instance; False if it must stay pending (body not here yet)."""
        ref = MessageRef(MailboxRef(self.user, mailbox), guid, body)
        if self.prefetched:
            state = self.states.get(ref)
            holders = self.holders.get((mailbox, guid, body), [])
        else:
            state = load_message(self.index, ref)
            holders = self.index.files_of_instance(self.user, mailbox, guid, body)
        target = self.target(mailbox) if state is not None and state.alive else None
        folder = None if target is None else self.folders.guid_at(target.path)
        if target is not None and folder is None and not self.dry_run:
            self.report.warn(f"{self.user or '(store)'}: no folder for {'/'.join(target.path)}")
            return False
        path = None if target is None else target.path
        keep = [row for row in holders if row.folder == folder] if folder is not None else []
        if target is not None and state is not None:
            assert path is not None
            if keep:
                self.reflag(keep[0], path, state.effective_flags())
            elif not self.place(ref, state, folder, path, holders):
                return False
        for row in holders:
            if row in keep:
                continue
            where = self.folders.by_guid.get(row.folder)
            if self.dry_run:
                if where is not None:
                    self.report.message(self.user, where, "expunged")
                continue
            if where is not None:
                try:
                    self.store.expunge(self.user, where, row.key)  # gone already is fine
                except ItemRefused as exc:
                    self.report.fail_item(self.user, f"{'/'.join(where)} message {row.key}",
                                          exc)
                    return False
                self.report.message(self.user, where, "expunged")
                failpoints.reached("apply")
            self.drop_file(row.folder, row.key)
        return True

    # -- subscriptions ---------------------------------------------------------------

    def subscriptions(self) -> None:
        wanted = {
            r.path for guid, r in self.resolved.items()
            if r.canonical == guid and r.exists and r.subscribed and self.wanted(r.path)
        }
        current = self.store.subscriptions(self.user)
        managed = {p for p in current if self.wanted(p)}
        if managed != wanted:
            self.report.subscriptions(self.user, len(wanted ^ managed))
            if not self.dry_run:
                self.store.set_subscriptions(self.user, wanted | (current - managed))

    # -- the whole user --------------------------------------------------------------

    def begin(self) -> None:
        """Make the user's Maildir, create and rename folders, and sort the pending
        instances into :attr:`placing` and :attr:`removing` (held-back ones stay)."""
        if not self.dry_run:
            self.store.ensure_user(self.user)
        early, self.late = self.plan()
        for action in early:
            with self.index.transaction():
                self.do_folder(action)
        pending = self.index.pending_messages(self.user)
        # Placements first, removals after: the body of a message moved to another
        # folder is read from its old file before that file goes.
        self.placing, self.removing = [], []
        any_excluded = not all(self.wanted(path) for path in self.folders.by_guid.values())
        for start in range(0, len(pending), APPLY_BATCH):
            some = pending[start:start + APPLY_BATCH]
            alive = self.alive(some)
            for item in some:
                where = self.held(*item, any_excluded=any_excluded)
                if where is not None:
                    self.held_back.add(where)
                    self.held_messages += 1
                    continue  # stays pending: applied once the filter is lifted
                # Placed if the merged state wants it in some folder.
                placed = item in alive and self.target(item[0]) is not None
                (self.placing if placed else self.removing).append(item)

    def apply_items(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Reconcile ``items`` (at most :data:`APPLY_BATCH`) inside the caller's index
        transaction and store batch; their file rows and cleared marks are written
        now, and the caller commits them only after the store's batch has ended."""
        done: list[tuple[str, str, str]] = []
        self.prefetch(items)
        try:
            for mailbox, guid, body in items:
                if self.message(mailbox, guid, body) and not self.dry_run:
                    done.append((mailbox, guid, body))
                if self.tick is not None:
                    self.tick()
            self.record()
        finally:
            self.end_batch()
        # Nothing in the batch reads the pending marks: cleared in one go.
        self.index.clear_pending_messages(self.user, done)

    def finish(self) -> None:
        """Delete the folders the plan removes, write the subscriptions, and clear
        the user's pending mark (the caller's transaction)."""
        for deletion in self.late:
            self.delete_folder(deletion)
        self.subscriptions()
        self.held_back |= self.held_folders()
        if not self.dry_run and not self.held_back:
            # A user with held-back mailboxes stays pending: lifting the filter
            # creates, renames and fills them.
            self.index.clear_pending_user(self.user)

    def run(self) -> None:
        """Apply this user's pending work alone, one transaction per batch."""
        self.begin()
        # Batches keep the index's commits (and their fsyncs) few; a crash inside one
        # only repeats idempotent store actions.
        for work in (self.placing, self.removing):
            for start in range(0, len(work), APPLY_BATCH):
                # The store's batch ends (messages durable and named) before the
                # index commits that they are there.
                with self.index.transaction():
                    with self.store.batch(step=failpoints.reached):
                        self.apply_items(work[start:start + APPLY_BATCH])
                    # The batch is durable and named; the index has not recorded it.
                    failpoints.reached("batch")
        with self.index.transaction():
            self.finish()


# Users with little pending work are applied together: one index transaction and
# one store batch (one syncfs) for the placements of all of them, then one of each
# for their removals, where each user alone cost three commits and a syncfs. A
# group holds at most this many pending instances, in at most this many mailboxes
# (the folders the two passes work in: the Maildir store keeps the listings of 64
# folders between them).
GROUP_MESSAGES = 2 * APPLY_BATCH
GROUP_FOLDERS = 48


def _apply_together(works: Sequence[_UserApply], report: ApplyReport) -> bool:
    """Apply the users of ``works`` together; False if a store error stopped it.

    Placements of every user, then (committed) removals of every user: a moved
    message's new file is durable and recorded before its old one goes, as when
    each user is applied alone. Each pass is one transaction, committed only
    after its store batch ended, so a crash or an error anywhere leaves what the
    pass did to the store for the next run to find again (idempotent), and its
    report is kept only once it is committed. After False the caller applies
    the users that are still pending one by one, which names the one that fails.
    """
    site = works[0].site
    part = ApplyReport()
    try:
        for passing in ("placing", "removing"):
            for work in works:
                work.report = part
            with site.index.transaction():
                if passing == "placing":
                    for work in works:
                        work.begin()
                with site.store.batch(step=failpoints.reached):
                    for work in works:
                        items = work.placing if passing == "placing" else work.removing
                        for start in range(0, len(items), APPLY_BATCH):
                            work.apply_items(items[start:start + APPLY_BATCH])
                failpoints.reached("batch")
                if passing == "removing":
                    for work in works:
                        work.finish()
            report.absorb(part)
            part = ApplyReport()
    except StoreError:
        return False
    finally:
        for work in works:
            work.report = report
    return True


class _Users:
    """The users of one apply, each alone or in a group with others (see above)."""

    def __init__(self, site: Site, *, dry_run: bool, report: ApplyReport, held: HeldBack,
                 tick: Callable[[], None], bodies: BodyFinder) -> None:
        self.site = site
        self.dry_run = dry_run
        self.report = report
        self.held = held
        self.tick = tick
        self.bodies = bodies
        self.applied: list[str] = []
        self.counts = site.index.pending_counts()
        self.group: list[_UserApply] = []
        self.size = self.boxes = 0  # the group's pending instances and their mailboxes

    def work(self, user: str) -> _UserApply:
        return _UserApply(self.site, user, dry_run=self.dry_run, report=self.report,
                          tick=self.tick, bodies=self.bodies)

    def add(self, user: str) -> None:
        work = self.work(user)
        size, boxes = self.counts.get(user, (0, 0))
        if self.dry_run or size > APPLY_BATCH:
            self.flush()
            self.alone(work)
            return
        if self.group and (self.size + size > GROUP_MESSAGES
                           or self.boxes + boxes > GROUP_FOLDERS):
            self.flush()  # a new group
        self.group.append(work)
        self.size += size
        self.boxes += boxes

    def flush(self) -> None:
        works, self.group = self.group, []
        self.size = self.boxes = 0
        if len(works) == 1:
            self.alone(works[0])
        elif works and _apply_together(works, self.report):
            self.applied.extend(work.user for work in works)
            for work in works:
                self.gather(work)
        else:
            # Once more, one user at a time, each from what is still pending: the
            # store's actions are idempotent, and a failure is that user's alone.
            for work in works:
                self.alone(self.work(work.user))

    def alone(self, work: _UserApply) -> None:
        try:
            work.run()
            self.applied.append(work.user)
        except StoreError as exc:
            self.report.fail(work.user, exc)
            self.held.failed = True
        self.gather(work)

    def gather(self, work: _UserApply) -> None:
        if work.held_back:
            self.held.mailboxes[work.user] = sorted("/".join(p) for p in work.held_back)
        self.held.messages += work.held_messages


def apply_pending(site: Site, *, dry_run: bool = False, report: ApplyReport | None = None,
                  progress: Callable[[str, int, int | None], None] | None = None,
                  held: HeldBack | None = None) -> ApplyReport:
    """Apply every pending change to the store; one user's failure does not stop the others.

    ``held`` is filled with what a filter held back (it stays pending)."""
    report = report if report is not None else ApplyReport()
    if not dry_run:
        with site.index.transaction():
            site.index.clear_wants()  # what is still missing is asked for again below
    bodies = BodyFinder(site)
    total = site.index.count_pending() if progress is not None else 0
    done = 0

    def tick() -> None:
        nonlocal done
        done = min(done + 1, total)  # a group applied again user by user counts once
        if progress is not None:
            progress("messages applied", done, total)

    held = held if held is not None else HeldBack()
    present = set(site.store.users())
    new_users = 0
    users = _Users(site, dry_run=dry_run, report=report, held=held, tick=tick, bodies=bodies)
    try:
        for user in site.index.pending_users():
            if not site.config.users.matches(user):
                continue  # outside this run's masks: held back, still pending
            if user not in present and not dry_run:
                new_users += 1
                if new_users > site.config.limits.max_new_users:
                    report.fail(user, OverLimit(
                        f"more than {site.config.limits.max_new_users} new users in one run; "
                        f"user {user or '(store)'} was not created"))
                    held.failed = True
                    continue
            users.add(user)
        users.flush()
    finally:
        bodies.close()
    if not dry_run:
        with site.index.transaction():
            site.index.set_held_back(held.mailboxes)
        # What only this apply changed need not be listed by the next scan.
        keep_applied_stamps(site, users.applied, touched={
            where for where, tally in report.tallies.items()
            if tally.added or tally.expunged or tally.flags})
    report.warnings.extend(site.store.take_warnings())
    return report


@dataclass
class HeldBack:
    """What the last apply left pending because a filter excludes it."""

    mailboxes: dict[str, list[str]] = field(default_factory=dict)  # user -> names
    messages: int = 0
    failed: bool = False  # some user's apply failed: pending is not only held back

    def only_held(self, index_pending: int) -> bool:
        """Whether everything still pending is held back (the spool can go: what the
        filter holds back is asked for again once it is lifted)."""
        return not self.failed and index_pending == self.messages
