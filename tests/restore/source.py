"""An in-memory SnapshotSource: snapshots taken from a real store, or built from values.

It answers the archive's read interface (:class:`bundlesync.archive.model.SnapshotSource`)
the way the archive does, so restores and the view are tested without it.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator, Mapping

from bundlesync.archive.model import ArchivedMailbox, ArchivedMessage, SnapshotInfo
from bundlesync.errors import UsageError
from bundlesync.stores.base import FolderPath, Store

# (user, folder path, message GUID) -> UID, and (user, folder path) -> (uidvalidity, uidnext)
Uids = Mapping[tuple[str, FolderPath, str], int]
MailboxUids = Mapping[tuple[str, FolderPath], tuple[int, int]]


class MemorySource:
    """Snapshots held in memory; bodies by SHA-256."""

    def __init__(self) -> None:
        self._snapshots: list[tuple[SnapshotInfo, dict[str, list[ArchivedMailbox]]]] = []
        self._bodies: dict[str, bytes] = {}
        self.bodies_read = 0

    # --- building ------------------------------------------------------------------------

    def add_body(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._bodies[digest] = data
        return digest

    def add_snapshot(self, time_ms: int, users: dict[str, list[ArchivedMailbox]]) -> SnapshotInfo:
        info = SnapshotInfo(
            id=hashlib.sha256(f"{time_ms}{len(self._snapshots)}".encode()).hexdigest()[:8],
            time_ms=time_ms,
            users=len(users),
            messages=sum(len(m.messages) for boxes in users.values() for m in boxes),
            bytes_added=0,
        )
        self._snapshots.append((info, users))
        self._snapshots.sort(key=lambda item: item[0].time_ms)
        return info

    def forget(self, snapshot_id: str) -> None:
        self._snapshots = [item for item in self._snapshots if item[0].id != snapshot_id]

    def take(
        self,
        store: Store,
        time_ms: int,
        *,
        uids: Uids | None = None,
        mailbox_uids: MailboxUids | None = None,
    ) -> SnapshotInfo:
        """A snapshot of every user of ``store`` as it is now.

        UIDs come from ``uids`` (what Dovecot reported), UIDVALIDITY and UIDNEXT
        from ``mailbox_uids``, else from what the store recorded.
        """
        users: dict[str, list[ArchivedMailbox]] = {}
        subscribed_by_user = {user: store.subscriptions(user) for user in store.users()}
        for user in store.users():
            boxes = []
            for number, folder in enumerate(store.folders(user)):
                messages = []
                for stored in store.messages(user, folder.path):
                    data = store.read_body(user, folder.path, stored.key)
                    messages.append(ArchivedMessage(
                        guid=stored.guid, body=self.add_body(data), size=len(data),
                        flags=stored.flags,
                        uid=(uids or {}).get((user, folder.path, stored.guid)),
                        internal_date=stored.internal_date, key=stored.key))
                validity, uidnext = (mailbox_uids or {}).get(
                    (user, folder.path), (folder.uidvalidity, None))
                boxes.append(ArchivedMailbox(
                    guid=folder.guid or f"{number + 1:032x}",
                    path=folder.path, uidvalidity=validity, uidnext=uidnext,
                    subscribed=folder.path in subscribed_by_user[user],
                    messages=tuple(messages)))
            users[user] = boxes
        return self.add_snapshot(time_ms, users)

    # --- SnapshotSource ------------------------------------------------------------------

    def snapshots(self) -> list[SnapshotInfo]:
        return [info for info, _ in self._snapshots]

    def find(self, at: str) -> SnapshotInfo:
        matches = [info for info, _ in self._snapshots if info.id.startswith(at)]
        if len(matches) == 1:
            return matches[0]
        try:
            moment = datetime.datetime.fromisoformat(at)
        except ValueError:
            raise UsageError(f"no snapshot {at!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        if len(at) == 10:  # a date alone: the newest snapshot of that day
            moment += datetime.timedelta(days=1) - datetime.timedelta(milliseconds=1)
        limit = int(moment.timestamp() * 1000)
        before = [info for info, _ in self._snapshots if info.time_ms <= limit]
        if not before:
            raise UsageError(f"no snapshot at or before {at}")
        return before[-1]

    def users(self, snapshot_id: str) -> list[str]:
        return sorted(self._content(snapshot_id))

    def mailboxes(self, snapshot_id: str, user: str) -> Iterator[ArchivedMailbox]:
        yield from sorted(self._content(snapshot_id).get(user, []), key=lambda m: m.path)

    def read_body(self, sha256: str) -> bytes:
        self.bodies_read += 1
        return self._bodies[sha256]

    def _content(self, snapshot_id: str) -> dict[str, list[ArchivedMailbox]]:
        for info, users in self._snapshots:
            if info.id == snapshot_id:
                return users
        raise UsageError(f"no snapshot {snapshot_id}")


def day_ms(date: str, hour: int = 12) -> int:
    """Milliseconds since the epoch of ``date`` (YYYY-MM-DD) at ``hour`` UTC."""
    moment = datetime.datetime.fromisoformat(date).replace(hour=hour, tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)
