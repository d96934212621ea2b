"""From a merge to the store actions that make a store show it.

The merge changes registers; the resolved tree (:mod:`bundlesync.core.names`)
says which folders should exist where. This module compares the tree and the
message registers *before* and *after* a merge and returns the actions a store
adapter applies, one by one, on a real Maildir:

1. ``plan.prepare`` of :func:`plan_folder_changes`: renames (through temporary
   names when names swap, chain or move into their own subtree), creates
   (parents first) and subscription changes;
2. the message actions of :func:`plan_messages`, with each folder at its
   *interim* path (:meth:`FolderPlan.interim_path`): adds, then flag changes,
   then removals -- a move adds the new file before removing the old one, so
   the body is still on disk when it is copied;
3. ``plan.cleanup``: deletes of folders that no longer exist, deepest first
   (a store deletes only empty folders, so this comes after the removals).

Folders are the *canonical* mailboxes of the resolved tree: mailboxes merged
because they have the same name share their canonical mailbox's folder, so
two instances of one message (same GUID, same body) in merged mailboxes are
one file there (:func:`collapse_instances`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bundlesync.core.model import MessageRef
from bundlesync.core.names import FolderPath, ResolvedMailbox, folder_paths
from bundlesync.core.state import FlagRegister, MessageState

__all__ = [
    "AddMessage",
    "Collapsed",
    "CreateFolder",
    "DeleteFolder",
    "FolderAction",
    "FolderPlan",
    "MessageAction",
    "Placed",
    "RemoveMessage",
    "RenameFolder",
    "SetFlags",
    "SetSubscribed",
    "collapse_instances",
    "plan_folder_changes",
    "plan_folders",
    "plan_message",
    "plan_messages",
]


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateFolder:
    """Create the folder, or -- if a folder is already at ``path`` -- keep its
    contents and record ``guid`` and ``uidvalidity`` for it (a merged or
    recreated mailbox takes over the folder)."""

    user: str
    path: FolderPath
    guid: str
    uidvalidity: int


@dataclass(frozen=True, slots=True)
class RenameFolder:
    """Rename a folder; the folders below it move with it."""

    user: str
    old: FolderPath
    new: FolderPath


@dataclass(frozen=True, slots=True)
class DeleteFolder:
    """Delete an empty folder; folders below it stay."""

    user: str
    path: FolderPath


@dataclass(frozen=True, slots=True)
class SetSubscribed:
    """Subscribe to or unsubscribe from the folder at ``path``."""

    user: str
    path: FolderPath
    subscribed: bool


FolderAction = CreateFolder | RenameFolder | DeleteFolder | SetSubscribed


@dataclass(frozen=True, slots=True)
class AddMessage:
    """Store the message (its body is the SHA-256 ``ref.body``) in the folder.

    The file is named by the message GUID. Two different bodies under one GUID
    in one folder (rule 8) both stay; the store adapter gives the second one
    its own file name and remembers which is which.
    """

    user: str
    path: FolderPath
    ref: MessageRef
    flags: frozenset[str]
    internal_date: int
    size: int


@dataclass(frozen=True, slots=True)
class RemoveMessage:
    """Remove the file holding ``ref.guid`` with body ``ref.body`` from the folder."""

    user: str
    path: FolderPath
    ref: MessageRef


@dataclass(frozen=True, slots=True)
class SetFlags:
    """Make the flags of the file holding ``ref.guid``/``ref.body`` exactly ``flags``."""

    user: str
    path: FolderPath
    ref: MessageRef
    flags: frozenset[str]


MessageAction = AddMessage | RemoveMessage | SetFlags


# --- folders ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderPlan:
    """Folder actions in two phases around the message actions.

    ``interim`` maps each folder that existed before (by its canonical GUID in
    the *before* tree) to its path between the two phases: pass that path as
    the *before* path of the messages it held.
    """

    prepare: tuple[FolderAction, ...]
    cleanup: tuple[DeleteFolder, ...]
    interim: tuple[tuple[str, FolderPath], ...]

    def interim_path(self, before_canonical: str) -> FolderPath | None:
        """Where the folder of a mailbox of the before tree is between the phases."""
        for guid, path in self.interim:
            if guid == before_canonical:
                return path
        return None

    def actions(self) -> list[FolderAction]:
        """Every action in order: ``prepare`` then ``cleanup``."""
        return [*self.prepare, *self.cleanup]


def _under(path: FolderPath, prefix: FolderPath) -> bool:
    return path[: len(prefix)] == prefix


class _Layout:
    """The simulated folder layout while a plan is built."""

    def __init__(self, user: str, folders: Mapping[str, FolderPath]) -> None:
        self.user = user
        self.at: dict[str, FolderPath] = {}  # folder id -> current path
        # Who is where, so that finding a path's occupant is one lookup, not a scan
        # of every folder (a tree 3,000 deep made that cubic). Ties go to the folder
        # placed first, as a scan of ``at`` in order would find.
        self._where: dict[FolderPath, set[str]] = {}
        self._order: dict[str, int] = {}
        self.actions: list[FolderAction] = []
        for fid, path in folders.items():
            self.place(fid, path)

    def place(self, fid: str, path: FolderPath) -> None:
        """Put ``fid`` at ``path`` in the simulated layout."""
        old = self.at.get(fid)
        if old is not None:
            holders = self._where[old]
            holders.discard(fid)
            if not holders:
                del self._where[old]
        self._order.setdefault(fid, len(self._order))
        self.at[fid] = path
        self._where.setdefault(path, set()).add(fid)

    def occupant(self, path: FolderPath) -> str | None:
        holders = self._where.get(path)
        return min(holders, key=self._order.__getitem__) if holders else None

    def collisions(self, fid: str, new: FolderPath) -> list[str]:
        """Folders outside ``fid``'s subtree that sit where its subtree would go."""
        old = self.at[fid]
        moving = {f for f, p in self.at.items() if _under(p, old)}
        targets = {new + self.at[f][len(old):] for f in moving}
        return sorted(f for f, p in self.at.items() if f not in moving and p in targets)

    def rename(self, fid: str, new: FolderPath) -> None:
        old = self.at[fid]
        self.actions.append(RenameFolder(self.user, old, new))
        for f, p in list(self.at.items()):
            if _under(p, old):
                self.place(f, new + p[len(old):])

    def free_name(self, stem: str) -> FolderPath:
        taken = {p[0] for p in self.at.values()}
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        return (name,)


def _settle(
    layout: _Layout, target: Mapping[str, FolderPath],
    make_room: Callable[[Iterable[str]], bool],
) -> None:
    """Rename every folder to its target, parents first; names that swap, chain
    or move into their own subtree step aside through a temporary name."""
    budget = 4 * len(target) + 8
    while True:
        pending = sorted(
            (f for f in target if layout.at[f] != target[f]),
            key=lambda f: (len(target[f]), target[f], f),
        )
        if not pending:
            return
        progressed = False
        for fid in pending:
            dest = target[fid]
            if layout.at[fid] == dest or _under(dest, layout.at[fid]):
                continue
            blockers = layout.collisions(fid, dest)
            if blockers and not make_room(blockers):
                continue
            layout.rename(fid, dest)
            progressed = True
        if not progressed:
            stuck = next((f for f in pending if not layout.at[f][0].startswith("bundlesync-tmp-")),
                         pending[0])
            layout.rename(stuck, layout.free_name(f"bundlesync-tmp-{stuck[:8]}"))
        budget -= 1
        if budget < 0:
            raise AssertionError("folder plan did not converge")  # a bug, never data


def plan_folder_changes(
    user: str, before: Mapping[str, ResolvedMailbox], after: Mapping[str, ResolvedMailbox]
) -> FolderPlan:
    """The folder actions that turn the ``before`` tree into the ``after`` tree."""
    b_folders = folder_paths(before)
    a_folders = folder_paths(after)
    layout = _Layout(user, b_folders)

    # A folder whose mailbox is gone while a new mailbox takes the same path
    # (merged with a same-name mailbox, or deleted and recreated) is taken
    # over in place: its remaining mail is moved or removed message by message.
    becomes = {fid: fid for fid in b_folders}
    b_by_path = {p: g for g, p in b_folders.items()}
    adopted: list[str] = []
    for g in sorted(a_folders):
        if g in b_folders:
            continue
        old = b_by_path.get(a_folders[g])
        if old is not None and old not in a_folders:
            becomes[old] = g
            adopted.append(old)
    target = {fid: a_folders[becomes[fid]] for fid in b_folders if becomes[fid] in a_folders}
    retiring = {fid for fid in b_folders if fid not in target}

    def make_room(fids: Iterable[str]) -> bool:
        """Move retiring folders out of the way; False if a live folder is in it."""
        for f in fids:
            if f not in retiring:
                return False
            layout.rename(f, layout.free_name(f"bundlesync-retired-{f[:8]}"))
        return True

    _settle(layout, target, make_room)

    for g in sorted(a_folders, key=lambda g: (len(a_folders[g]), a_folders[g])):
        if g in b_folders or g in becomes.values():
            continue
        path = a_folders[g]
        occupant = layout.occupant(path)
        if occupant is not None:
            ok = make_room([occupant])
            assert ok, f"create of {path} blocked by a live folder"
        layout.actions.append(CreateFolder(user, path, g, after[g].uidvalidity))
        layout.place(g, path)  # from now on it moves with its parents
        target[g] = path
        if occupant is not None:
            # A retiring folder that stepped aside took the folders below it
            # along: the live ones among them go back where they belong.
            _settle(layout, target, make_room)
    for fid in adopted:
        g = becomes[fid]
        layout.actions.append(CreateFolder(user, a_folders[g], g, after[g].uidvalidity))

    was_subscribed = {p: before[g].subscribed for g, p in b_folders.items()}
    now_subscribed = {p: after[g].subscribed for g, p in a_folders.items()}
    for path in sorted(set(was_subscribed) | set(now_subscribed)):
        old_value = was_subscribed.get(path, False)
        new_value = now_subscribed.get(path, False)
        if old_value != new_value:
            layout.actions.append(SetSubscribed(user, path, new_value))

    cleanup = tuple(
        DeleteFolder(user, layout.at[f])
        for f in sorted(retiring, key=lambda f: (-len(layout.at[f]), layout.at[f]))
    )
    return FolderPlan(
        prepare=tuple(layout.actions),
        cleanup=cleanup,
        interim=tuple(sorted((f, p) for f, p in layout.at.items() if f in b_folders)),
    )


def plan_folders(
    user: str, before: Mapping[str, ResolvedMailbox], after: Mapping[str, ResolvedMailbox]
) -> list[FolderAction]:
    """Every folder action, in order; the DeleteFolder actions come last.

    Apply the message actions between the last non-delete action and the first
    DeleteFolder, with before paths from :func:`plan_folder_changes`'s
    ``interim_path`` (folders may have moved by then).
    """
    return plan_folder_changes(user, before, after).actions()


# --- messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placed:
    """A message instance with the path of its mailbox's folder (None: no folder)."""

    state: MessageState
    path: FolderPath | None


@dataclass(frozen=True, slots=True)
class Collapsed:
    """One file standing for every alive instance of a (message GUID, body) in a folder."""

    representative: MessageRef
    flags: frozenset[str]
    internal_date: int
    size: int


def collapse_instances(instances: Iterable[MessageState]) -> Collapsed:
    """Merge instances of one message GUID and body that share a folder.

    The representative is the instance of the highest mailbox GUID (the
    canonical mailbox's own instance, if it has one); each flag takes the
    newest version across the instances (rule 3, applied across them). An
    instance has a version of a flag if its add carried the flag (set at the
    add's time) or it has a register for it; a flag its add did not carry and
    nobody changed there is no opinion, so it cannot clear another instance's.
    """
    states = sorted(instances, key=lambda s: s.ref)
    if not states:
        raise ValueError("collapse_instances needs at least one instance")
    head = states[-1]
    versions: dict[str, FlagRegister] = {}
    for state in states:
        for name, register in state.flag_versions().items():
            current = versions.get(name)
            if current is None or register.key() > current.key():
                versions[name] = register
    flags = frozenset(name for name, register in versions.items() if register.value)
    return Collapsed(
        representative=head.ref, flags=flags, internal_date=head.internal_date, size=head.size
    )


def _files(placed: Iterable[Placed]) -> dict[tuple[FolderPath, str, str], Collapsed]:
    groups: dict[tuple[FolderPath, str, str], list[MessageState]] = {}
    for p in placed:
        if p.path is not None and p.state.alive:
            groups.setdefault((p.path, p.state.ref.guid, p.state.ref.body), []).append(p.state)
    return {key: collapse_instances(states) for key, states in groups.items()}


def plan_messages(
    user: str, *, before: Iterable[Placed], after: Iterable[Placed]
) -> list[MessageAction]:
    """Message actions turning the files of ``before`` into the files of ``after``.

    Pass *every* instance of each (message GUID, body) concerned, on both sides
    -- not only the changed ones -- because instances in merged mailboxes share
    one file. Before paths are interim paths (see :class:`FolderPlan`). Order:
    adds, flag changes, removals.
    """
    old = _files(before)
    new = _files(after)
    adds: list[MessageAction] = []
    flag_changes: list[MessageAction] = []
    removals: list[MessageAction] = []
    for key in sorted(set(old) | set(new)):
        path = key[0]
        was, now = old.get(key), new.get(key)
        if now is not None and was is None:
            adds.append(AddMessage(user, path, now.representative, now.flags,
                                   now.internal_date, now.size))
        elif now is None and was is not None:
            removals.append(RemoveMessage(user, path, was.representative))
        elif now is not None and was is not None and now.flags != was.flags:
            flag_changes.append(SetFlags(user, path, now.representative, now.flags))
    return [*adds, *flag_changes, *removals]


def plan_message(
    user: str,
    before: MessageState | None,
    after: MessageState,
    *,
    before_path: FolderPath | None,
    after_path: FolderPath | None,
) -> list[MessageAction]:
    """The actions for one message instance that shares its file with no other.

    ``before_path``/``after_path``: the (interim) path of the canonical folder
    of its mailbox before/after, None if there is no such folder. Alive -> dead:
    remove; dead or new -> alive: add; folder changed: add there, then remove
    here; flags differ: set them.
    """
    old = [Placed(before, before_path)] if before is not None else []
    return plan_messages(user, before=old, after=[Placed(after, after_path)])
