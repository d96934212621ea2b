"""A strict in-memory folder store that applies plan actions the way a Maildir
adapter must, and refuses anything a real store could not do (renaming onto an
existing folder, deleting a non-empty folder, adding a file twice...).

Used to check that plans turn the store of the *before* state into exactly the
store of the *after* state.
"""

from __future__ import annotations

from collections.abc import Iterable

from bundlesync.core.merge import Replica
from bundlesync.core.names import FolderPath
from bundlesync.core.plan import (
    AddMessage,
    CreateFolder,
    DeleteFolder,
    FolderAction,
    FolderPlan,
    MessageAction,
    RemoveMessage,
    RenameFolder,
    SetFlags,
    SetSubscribed,
    collapse_instances,
)
from bundlesync.core.state import MessageState

FileKey = tuple[str, str]  # (message GUID, body)
Layout = tuple[
    dict[FolderPath, str], dict[FolderPath, dict[FileKey, frozenset[str]]], set[FolderPath]
]


class FakeStore:
    def __init__(self) -> None:
        self.folders: dict[FolderPath, str] = {}
        self.files: dict[FolderPath, dict[FileKey, frozenset[str]]] = {}
        self.subscribed: set[FolderPath] = set()

    # applying actions -----------------------------------------------------------
    def apply(self, action: FolderAction | MessageAction) -> None:
        if isinstance(action, CreateFolder):
            self.folders[action.path] = action.guid
            self.files.setdefault(action.path, {})
        elif isinstance(action, RenameFolder):
            assert action.old in self.folders, f"rename of a missing folder {action.old}"
            moving = [p for p in self.folders if p[: len(action.old)] == action.old]
            moved = {p: action.new + p[len(action.old):] for p in moving}
            for new in moved.values():
                assert new not in self.folders or new in moved, f"rename onto {new}"
            folders = {moved[p]: self.folders.pop(p) for p in moving}
            files = {moved[p]: self.files.pop(p) for p in moving}
            self.folders.update(folders)
            self.files.update(files)
        elif isinstance(action, DeleteFolder):
            assert action.path in self.folders, f"delete of a missing folder {action.path}"
            assert not self.files[action.path], f"delete of a non-empty folder {action.path}"
            del self.folders[action.path]
            del self.files[action.path]
        elif isinstance(action, SetSubscribed):
            if action.subscribed:
                self.subscribed.add(action.path)
            else:
                self.subscribed.discard(action.path)
        elif isinstance(action, AddMessage):
            assert action.path in self.folders, f"add into a missing folder {action.path}"
            key = (action.ref.guid, action.ref.body)
            assert key not in self.files[action.path], f"add of a present file {key}"
            self.files[action.path][key] = action.flags
        elif isinstance(action, RemoveMessage):
            key = (action.ref.guid, action.ref.body)
            assert key in self.files.get(action.path, {}), f"remove of a missing file {key}"
            del self.files[action.path][key]
        elif isinstance(action, SetFlags):
            key = (action.ref.guid, action.ref.body)
            assert key in self.files.get(action.path, {}), f"flags of a missing file {key}"
            self.files[action.path][key] = action.flags
        else:  # pragma: no cover
            raise TypeError(action)

    def apply_merge(self, plan: FolderPlan, messages: Iterable[MessageAction]) -> None:
        """Folder preparation, then the message actions, then the cleanup."""
        for action in plan.prepare:
            self.apply(action)
        for message_action in messages:
            self.apply(message_action)
        for delete in plan.cleanup:
            self.apply(delete)

    def snapshot(self) -> Layout:
        return (dict(self.folders), {p: dict(f) for p, f in self.files.items()},
                set(self.subscribed))


def projection(replica: Replica, user: str) -> Layout:
    """What a store showing ``replica`` must hold for ``user``."""
    resolved = replica.resolve(user)
    folders = {r.path: r.guid for r in resolved.values() if r.has_folder}
    subscribed = {r.path for r in resolved.values() if r.has_folder and r.subscribed}
    groups: dict[FolderPath, dict[FileKey, list[MessageState]]] = {p: {} for p in folders}
    for ref, state in replica.messages.items():
        if ref.mailbox.user != user or not state.alive:
            continue
        entry = resolved[ref.mailbox.guid]
        path = resolved[entry.canonical].path
        groups[path].setdefault((ref.guid, ref.body), []).append(state)
    files = {
        path: {key: collapse_instances(states).flags for key, states in by_key.items()}
        for path, by_key in groups.items()
    }
    return folders, files, subscribed
