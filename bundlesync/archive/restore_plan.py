"""What a restore takes from a snapshot: selection, dates, keys and its report.

Shared by ``restore --into``, ``restore --beside`` and the Backups view, and free
of I/O: the callers read the snapshot and the store, these functions decide.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bundlesync.archive.model import ArchivedMailbox, ArchivedMessage, SnapshotInfo, SnapshotSource
from bundlesync.archive.users import UserSelection
from bundlesync.core.model import SYSTEM_FLAGS
from bundlesync.errors import UsageError
from bundlesync.stores.base import FolderPath
from bundlesync.stores.dovecot_files import misstated_size
from bundlesync.stores.errors import UnsafeName
from bundlesync.stores.names import check_folder_path, check_key, check_keyword


@dataclass(frozen=True, slots=True)
class Selection:
    """Which users and mailboxes to take; empty means all.

    ``users`` are masks on the user name as ``backup -u`` takes them (``*@example.org``);
    ``mailboxes`` are shell patterns on the folder path joined with "/"
    (``INBOX``, ``Archive/*``). A pattern also selects the folders below a
    folder it names, so ``Archive`` takes ``Archive/2024`` too.
    """

    users: tuple[str, ...] = ()
    mailboxes: tuple[str, ...] = ()

    def takes_user(self, user: str) -> bool:
        # The masks mean what they mean to 'backup -u' (doveadm's * and ?).
        return not self.users or bool(UserSelection(self.users).select([user])[0])

    def takes_mailbox(self, path: FolderPath) -> bool:
        if not self.mailboxes:
            return True
        name = "/".join(path)
        return any(
            fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + "/*")
            for pattern in self.mailboxes
        )


@dataclass(frozen=True, slots=True)
class MailboxOutcome:
    """What a restore does (or, in a dry run, would do) for one mailbox of one user."""

    user: str
    source: FolderPath  # the folder in the snapshot
    target: FolderPath  # where its messages go
    restored: int  # messages written (or to be written)
    restored_bytes: int
    present: int  # messages already there, left alone


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """The outcome of one restore, per user and mailbox, in mail terms."""

    snapshot: SnapshotInfo
    mode: str  # "into" or "beside"
    dry_run: bool
    mailboxes: tuple[MailboxOutcome, ...]

    @property
    def restored(self) -> int:
        return sum(item.restored for item in self.mailboxes)

    @property
    def restored_bytes(self) -> int:
        return sum(item.restored_bytes for item in self.mailboxes)

    @property
    def present(self) -> int:
        return sum(item.present for item in self.mailboxes)

    def lines(self) -> list[str]:
        """For people: one line per mailbox that gets mail, then the totals.

        ``alice@example.org  INBOX -> Restored/2026-11-30/INBOX: restored 2 messages ...``
        """
        verb = "would restore" if self.dry_run else "restored"
        out = []
        for item in self.mailboxes:
            if not item.restored:
                continue
            out.append(
                f"{item.user or '(store)'}  {'/'.join(item.source)} -> {'/'.join(item.target)}: "
                f"{verb} {_count(item.restored, 'message')} ({item.restored_bytes:,} bytes), "
                f"{item.present} already there"
            )
        complete = sum(1 for item in self.mailboxes if not item.restored)
        out.append(
            f"{verb} {_count(self.restored, 'message')} ({self.restored_bytes:,} bytes) from "
            f"snapshot {self.snapshot.id} ({snapshot_date(self.snapshot)}); "
            f"{self.present} already there; {_count(complete, 'mailbox')} lacked nothing"
        )
        return out

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict for ``--json``."""
        return {
            "snapshot": self.snapshot.id,
            "time_ms": self.snapshot.time_ms,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "restored": self.restored,
            "restored_bytes": self.restored_bytes,
            "present": self.present,
            "mailboxes": [
                {
                    "user": item.user,
                    "source": "/".join(item.source),
                    "target": "/".join(item.target),
                    "restored": item.restored,
                    "restored_bytes": item.restored_bytes,
                    "present": item.present,
                }
                for item in self.mailboxes
            ],
        }


def _count(number: int, noun: str) -> str:
    plural = noun + ("es" if noun.endswith("x") else "s")
    return f"{number:,} {noun if number == 1 else plural}"


def snapshot_date(info: SnapshotInfo) -> str:
    """The snapshot's UTC date, ``YYYY-MM-DD``: the folder name restores and the view use."""
    moment = datetime.datetime.fromtimestamp(info.time_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d")


def selected(
    source: SnapshotSource, snapshot_id: str, selection: Selection
) -> Iterator[tuple[str, ArchivedMailbox]]:
    """(user, mailbox) of every selected mailbox of the snapshot, users sorted."""
    for user in source.users(snapshot_id):
        if not selection.takes_user(user):
            continue
        for mailbox in source.mailboxes(snapshot_id, user):
            if selection.takes_mailbox(mailbox.path):
                yield user, mailbox


def check_selection_matches(
    source: SnapshotSource, snapshot: SnapshotInfo, selection: Selection
) -> None:
    """Refuse a --user mask that matches no user of the snapshot (likely a typo)."""
    users = source.users(snapshot.id)
    for mask in selection.users:
        if not UserSelection((mask,)).select(users)[0]:
            raise UsageError(
                f"no user of snapshot {snapshot.id} ({snapshot_date(snapshot)}) matches {mask!r}",
                hint="List the snapshot's users with 'bundlesync snapshots', then use one "
                "of them or a pattern such as '*@example.org'.",
            )


def parse_prefix(text: str) -> FolderPath:
    """A folder path from "Restored" or "Recovered/Mail" (levels joined with "/")."""
    try:
        return check_folder_path(tuple(part for part in text.split("/") if part))
    except UnsafeName as exc:
        raise UsageError(
            f"cannot use {text!r} as the restore folder: {exc.message}",
            hint="Give a folder name such as 'Restored' or 'Recovered/Mail'.",
        ) from None


def storable_flags(flags: Iterable[str]) -> frozenset[str]:
    """The flags a Maildir can hold: known system flags and valid keywords.

    Session flags such as ``\\Recent`` and names an IMAP server would refuse are
    left out rather than failing the restore of the message.
    """
    kept = set()
    for flag in flags:
        if flag.startswith("\\"):
            if flag in SYSTEM_FLAGS:
                kept.add(flag)
            continue
        try:
            kept.add(check_keyword(flag))
        except UnsafeName:
            continue
    return frozenset(kept)


def derived_key(message: ArchivedMessage) -> str:
    """A stable file name for a message whose GUID cannot be one (or is taken).

    Stable, so that a restore run again after an interruption writes the same
    name and finds what it wrote before; shaped like Dovecot's names (seconds
    first) so Dovecot numbers restored files in their received order.
    """
    digest = hashlib.sha256(f"{message.guid}\0{message.body}".encode()).hexdigest()[:24]
    return f"{max(0, message.internal_date)}.R{digest}.bundlesync"


def candidate_keys(message: ArchivedMessage) -> tuple[str, ...]:
    """Every file name a restore may have given the message (see :func:`key_with_body`)."""
    names = [name for name in (message.key, message.guid) if name is not None]
    return (*names, derived_key(message))


def needs_body_for_key(message: ArchivedMessage) -> bool:
    """True if choosing the message's file name needs its body (``S=``/``W=`` fields)."""
    return any("S=" in name or "W=" in name for name in (message.key or "", message.guid))


def key_with_body(message: ArchivedMessage, data: bytes) -> str:
    """The file name a restored message gets: its name at backup time, else its GUID.

    A name that is not a safe Maildir name, or whose ``S=``/``W=`` fields misstate
    the body (Dovecot trusts those fields), gives way to the next; the last resort
    is :func:`derived_key`.
    """
    for name in (message.key, message.guid):
        if name is None:
            continue
        try:
            check_key(name)
        except UnsafeName:
            continue
        if misstated_size(name, data) is None:
            return name
    return derived_key(message)


__all__ = [
    "MailboxOutcome",
    "RestoreReport",
    "Selection",
    "candidate_keys",
    "check_selection_matches",
    "derived_key",
    "key_with_body",
    "needs_body_for_key",
    "parse_prefix",
    "selected",
    "snapshot_date",
    "storable_flags",
]
