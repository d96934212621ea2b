"""An in-memory replica: the registers of a whole state, folded from changes.

The real state lives in the SQLite index, which loads only the registers a
change touches and joins them with :mod:`bundlesync.core.state`. This class
is the same fold over plain dictionaries: for tests, for the reference model of
the property tests, and for planning small merges (a dry run) in memory.
"""

from __future__ import annotations

from collections.abc import Iterable

from bundlesync.core.model import Change, MailboxRef, MessageRef
from bundlesync.core.names import ResolvedMailbox, resolve_mailboxes
from bundlesync.core.state import (
    MailboxState,
    MessageState,
    apply_to_mailbox,
    apply_to_message,
    join_mailboxes,
    join_messages,
    register_key,
)

__all__ = ["Replica"]


class Replica:
    """Every message and mailbox register of a state, keyed by its ref."""

    __slots__ = ("mailboxes", "messages")

    def __init__(self) -> None:
        self.messages: dict[MessageRef, MessageState] = {}
        self.mailboxes: dict[MailboxRef, MailboxState] = {}

    @classmethod
    def of(cls, changes: Iterable[Change]) -> Replica:
        """The replica holding exactly ``changes``."""
        replica = cls()
        replica.apply_all(changes)
        return replica

    def apply(self, change: Change) -> MessageRef | MailboxRef:
        """Join one change into its register; returns the register's key."""
        key = register_key(change.op)
        if isinstance(key, MessageRef):
            self.messages[key] = apply_to_message(self.messages.get(key), change)
        else:
            self.mailboxes[key] = apply_to_mailbox(self.mailboxes.get(key), change)
        return key

    def apply_all(self, changes: Iterable[Change]) -> None:
        """Join every change, in the order given (any order gives the same result)."""
        for change in changes:
            self.apply(change)

    def join(self, other: Replica) -> None:
        """Join every register of ``other`` into this replica."""
        for ref, m in other.messages.items():
            mine = self.messages.get(ref)
            self.messages[ref] = m if mine is None else join_messages(mine, m)
        for mref, b in other.mailboxes.items():
            mine_b = self.mailboxes.get(mref)
            self.mailboxes[mref] = b if mine_b is None else join_mailboxes(mine_b, b)

    def copy(self) -> Replica:
        """An independent copy (registers are immutable, so this is cheap)."""
        clone = Replica()
        clone.messages = dict(self.messages)
        clone.mailboxes = dict(self.mailboxes)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Replica):
            return NotImplemented
        return self.messages == other.messages and self.mailboxes == other.mailboxes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def users(self) -> list[str]:
        """Every user with a mailbox or message register, sorted."""
        found = {ref.user for ref in self.mailboxes}
        found.update(ref.mailbox.user for ref in self.messages)
        return sorted(found)

    def live_mailboxes(self, user: str) -> set[str]:
        """GUIDs of the user's mailboxes holding at least one alive message."""
        return {
            ref.mailbox.guid
            for ref, m in self.messages.items()
            if ref.mailbox.user == user and m.alive
        }

    def resolve(self, user: str) -> dict[str, ResolvedMailbox]:
        """The user's resolved mailbox tree."""
        boxes = {ref.guid: m for ref, m in self.mailboxes.items() if ref.user == user}
        return resolve_mailboxes(boxes, live=self.live_mailboxes(user))
