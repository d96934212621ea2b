"""The replicated state: independent per-key registers, each a join-semilattice.

Every change touches exactly one register, named by :func:`register_key`: a
message instance (:class:`~bundlesync.core.model.MessageRef`) or a mailbox
(:class:`~bundlesync.core.model.MailboxRef`). Applying a change is the join of
the register with that change, so an import needs to load only the registers
its changes touch, and

* applying the same set of changes in any order, any number of times, gives
  the same register (the join is commutative, associative and idempotent);
* no rule looks at which site is "local": ties are broken by data, first the
  hybrid-clock :class:`~bundlesync.core.model.Timestamp` (which includes the
  site id), then -- for the rare full tie after a restore -- the value itself.

Each rule is written down, with an example, in ``docs/conflict-rules.md``; the
rule numbers below refer to design §3.1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
)

__all__ = [
    "FlagRegister",
    "MailboxState",
    "MessageState",
    "apply_to_mailbox",
    "apply_to_message",
    "empty_mailbox",
    "empty_message",
    "inventory_timestamp",
    "join_mailboxes",
    "join_messages",
    "register_key",
]


def inventory_timestamp(site: str) -> Timestamp:
    """The timestamp of everything a site records when it is initialised on an
    existing store: lower than any real change (design rule 9).

    Two sites initialised on copies of one store record the same mailboxes and
    messages, each at its own inventory timestamp; the join of the two is
    the same state, so their first exchange adds nothing.
    """
    return Timestamp(0, 0, site)


@dataclass(frozen=True, slots=True)
class FlagRegister:
    """A last-writer-wins register holding one boolean.

    Order: the later timestamp wins; on a full tie, ``True`` wins (rule 7 for
    subscriptions; the same convention for flags keeps one rule to remember).
    """

    ts: Timestamp
    value: bool

    def key(self) -> tuple[Timestamp, bool]:
        """The order of registers: timestamp, then value."""
        return (self.ts, self.value)


def _max_register(a: FlagRegister | None, b: FlagRegister | None) -> FlagRegister | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.key() >= b.key() else b


# --- messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageState:
    """Everything known about one message instance (mailbox, message GUID, body).

    ``add_ts`` is the newest MessageAdded seen; ``size``, ``internal_date`` and
    ``base_flags`` come from that add (zero/empty while no add has been seen,
    e.g. when a flag change arrives before the add). ``expunge_ts`` is the
    newest MessageExpunged seen. ``flags`` holds one register per flag name,
    sorted by name.
    """

    ref: MessageRef
    add_ts: Timestamp | None = None
    size: int = 0
    internal_date: int = 0
    base_flags: frozenset[str] = frozenset()
    expunge_ts: Timestamp | None = None
    flags: tuple[tuple[str, FlagRegister], ...] = ()

    @property
    def alive(self) -> bool:
        """Rules 1 and 2: present once added, until an expunge at least as new as
        the newest add. A later re-add (the message moved away and back) revives."""
        if self.add_ts is None:
            return False
        return self.expunge_ts is None or self.add_ts > self.expunge_ts

    def flag_register(self, name: str) -> FlagRegister | None:
        """The register of one flag, None if no change to it was seen."""
        for flag, register in self.flags:
            if flag == name:
                return register
        return None

    def effective_flags(self) -> frozenset[str]:
        """Rule 3: per flag, the newest of (the winning add's flags, that flag's
        register). A register older than the add is history the add supersedes."""
        result = set(self.base_flags) if self.add_ts is not None else set()
        for name, register in self.flags:
            if self.add_ts is None or register.ts > self.add_ts:
                if register.value:
                    result.add(name)
                else:
                    result.discard(name)
        return frozenset(result)

    def flag_versions(self) -> dict[str, FlagRegister]:
        """Each flag's effective value with the timestamp it comes from.

        A flag carried by the winning add counts as set at ``add_ts``; a flag
        cleared by being absent from the add counts as cleared at ``add_ts``.
        Used to merge the flags of two instances that share one file
        (see :func:`bundlesync.core.plan.collapse_instances`).
        """
        versions: dict[str, FlagRegister] = {}
        if self.add_ts is not None:
            for name in self.base_flags:
                versions[name] = FlagRegister(self.add_ts, True)
        for name, register in self.flags:
            if self.add_ts is None or register.ts > self.add_ts:
                versions[name] = register
            elif name not in versions:
                versions[name] = FlagRegister(self.add_ts, False)
        return versions


def empty_message(ref: MessageRef) -> MessageState:
    """The bottom element of a message register: nothing known yet."""
    return MessageState(ref=ref)


def _add_key(
    ts: Timestamp, size: int, internal_date: int, flags: frozenset[str]
) -> tuple[Timestamp, int, int, tuple[str, ...]]:
    # A full tie on ts only happens when a restored site re-issues a timestamp;
    # comparing the values keeps the choice the same on every site.
    return (ts, size, internal_date, tuple(sorted(flags)))


def _join_flag_tables(
    a: tuple[tuple[str, FlagRegister], ...], b: Iterable[tuple[str, FlagRegister]]
) -> tuple[tuple[str, FlagRegister], ...]:
    table = dict(a)
    for name, register in b:
        joined = _max_register(table.get(name), register)
        assert joined is not None
        table[name] = joined
    return tuple(sorted(table.items()))


def join_messages(a: MessageState, b: MessageState) -> MessageState:
    """The least upper bound of two states of the same message instance."""
    if a.ref != b.ref:
        raise ValueError(f"cannot join states of different messages: {a.ref} and {b.ref}")
    winner = a
    if b.add_ts is not None and (
        a.add_ts is None
        or _add_key(b.add_ts, b.size, b.internal_date, b.base_flags)
        > _add_key(a.add_ts, a.size, a.internal_date, a.base_flags)
    ):
        winner = b
    expunge_ts = _max_ts(a.expunge_ts, b.expunge_ts)
    return MessageState(
        ref=a.ref,
        add_ts=winner.add_ts,
        size=winner.size,
        internal_date=winner.internal_date,
        base_flags=winner.base_flags,
        expunge_ts=expunge_ts,
        flags=_join_flag_tables(a.flags, b.flags),
    )


def _max_ts(a: Timestamp | None, b: Timestamp | None) -> Timestamp | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _message_delta(change: Change) -> MessageState:
    """The state that holds exactly one message change."""
    op = change.op
    ts = change.ts
    if isinstance(op, MessageAdded):
        return MessageState(
            ref=op.message,
            add_ts=ts,
            size=op.size,
            internal_date=op.internal_date,
            base_flags=op.flags,
        )
    if isinstance(op, MessageExpunged):
        return MessageState(ref=op.message, expunge_ts=ts)
    if isinstance(op, FlagsChanged):
        table: dict[str, FlagRegister] = {}
        for name in op.removed:
            table[name] = FlagRegister(ts, False)
        # A flag both added and removed in one change: set wins (the register tie rule).
        for name in op.added:
            table[name] = FlagRegister(ts, True)
        return MessageState(ref=op.message, flags=tuple(sorted(table.items())))
    raise TypeError(f"not a message change: {type(op).__name__}")


def apply_to_message(state: MessageState | None, change: Change) -> MessageState:
    """Join one MessageAdded / MessageExpunged / FlagsChanged into a message register.

    ``state`` is None when the register is not known yet.
    """
    delta = _message_delta(change)
    if state is None:
        return delta
    return join_messages(state, delta)


# --- mailboxes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailboxState:
    """Everything known about one mailbox (identified by its GUID).

    The name register (``name_ts``, ``parent``, ``name``, ``renamed``) holds the
    newest of every MailboxCreated and MailboxRenamed seen: ``parent`` is the
    parent mailbox's GUID (None at the top level), ``name`` the leaf name, and
    ``renamed`` is False while the name is the one the mailbox was created with.
    ``uidvalidity`` and ``special_use`` come from the newest MailboxCreated.
    ``created_ts`` / ``delete_ts`` are the newest create / delete seen, and
    ``subscription`` the subscription register. Whether the mailbox exists, and
    under which full name, is decided for all of a user's mailboxes together by
    :func:`bundlesync.core.names.resolve_mailboxes`.
    """

    ref: MailboxRef
    name_ts: Timestamp | None = None
    parent: str | None = None
    name: str = ""
    renamed: bool = False
    uidvalidity: int = 0
    special_use: str | None = None
    created_ts: Timestamp | None = None
    delete_ts: Timestamp | None = None
    subscription: FlagRegister | None = None

    @property
    def subscribed(self) -> bool:
        """The subscription register's value (False if never set)."""
        return self.subscription is not None and self.subscription.value


def empty_mailbox(ref: MailboxRef) -> MailboxState:
    """The bottom element of a mailbox register: nothing known yet."""
    return MailboxState(ref=ref)


def _name_key(m: MailboxState) -> tuple[Timestamp, bool, str, str] | None:
    if m.name_ts is None:
        return None
    return (m.name_ts, m.renamed, m.parent or "", m.name)


def _create_key(m: MailboxState) -> tuple[Timestamp, int, str] | None:
    if m.created_ts is None:
        return None
    return (m.created_ts, m.uidvalidity, m.special_use or "")


def join_mailboxes(a: MailboxState, b: MailboxState) -> MailboxState:
    """The least upper bound of two states of the same mailbox."""
    if a.ref != b.ref:
        raise ValueError(f"cannot join states of different mailboxes: {a.ref} and {b.ref}")
    ka, kb = _name_key(a), _name_key(b)
    name_src = b if kb is not None and (ka is None or kb > ka) else a
    ca, cb = _create_key(a), _create_key(b)
    create_src = b if cb is not None and (ca is None or cb > ca) else a
    return MailboxState(
        ref=a.ref,
        name_ts=name_src.name_ts,
        parent=name_src.parent,
        name=name_src.name,
        renamed=name_src.renamed,
        uidvalidity=create_src.uidvalidity,
        special_use=create_src.special_use,
        created_ts=create_src.created_ts,
        delete_ts=_max_ts(a.delete_ts, b.delete_ts),
        subscription=_max_register(a.subscription, b.subscription),
    )


def _mailbox_delta(change: Change) -> MailboxState:
    op = change.op
    ts = change.ts
    if isinstance(op, MailboxCreated):
        return MailboxState(
            ref=op.mailbox,
            name_ts=ts,
            parent=op.parent,
            name=op.name,
            renamed=False,
            uidvalidity=op.uidvalidity,
            special_use=op.special_use,
            created_ts=ts,
        )
    if isinstance(op, MailboxRenamed):
        return MailboxState(
            ref=op.mailbox, name_ts=ts, parent=op.parent, name=op.name, renamed=True
        )
    if isinstance(op, MailboxDeleted):
        return MailboxState(ref=op.mailbox, delete_ts=ts)
    if isinstance(op, SubscriptionSet):
        return MailboxState(ref=op.mailbox, subscription=FlagRegister(ts, op.subscribed))
    raise TypeError(f"not a mailbox change: {type(op).__name__}")


def apply_to_mailbox(state: MailboxState | None, change: Change) -> MailboxState:
    """Join one MailboxCreated / MailboxRenamed / MailboxDeleted / SubscriptionSet
    into a mailbox register. ``state`` is None when the register is not known yet."""
    delta = _mailbox_delta(change)
    if state is None:
        return delta
    return join_mailboxes(state, delta)


def register_key(op: Operation) -> MessageRef | MailboxRef:
    """The register an operation touches: its message instance or its mailbox."""
    if isinstance(op, MessageAdded | MessageExpunged | FlagsChanged):
        return op.message
    return op.mailbox
