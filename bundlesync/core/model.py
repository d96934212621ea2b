"""Value types shared by every layer: identities, clocks, change records.

Everything here is a frozen, slotted dataclass: hashable, comparable where an
order is meaningful, and free of I/O. The bundle format encodes exactly these
values (``formats/bundle-v1.md`` §6), the merge folds them into a state
(``bundlesync.core.merge``), and the store adapters speak in the same words.

Identity rules (design §3.1, ``docs/conflict-rules.md``):

* A site is its ``site_id``: the lowercase hex of the first 16 bytes of the
  SHA-256 of its Ed25519 public key. Names are for people.
* A mailbox is ``MailboxRef(user, guid)``; ``guid`` is 32 lowercase hex digits.
  A rename keeps the GUID.
* A message instance is ``MessageRef(mailbox, guid, body)``: the mailbox, the
  message GUID (in Maildir the file's base name) and the SHA-256 (hex) of the
  raw body bytes. Two bodies under one message GUID are two instances.
* A change is identified by its ``Dot(site, incarnation, counter)`` and ordered
  by its hybrid logical clock ``Timestamp``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

# Flag names. System flags carry a backslash, as in IMAP; anything else is a
# keyword. Maildir letters: D=\Draft F=\Flagged P=$Forwarded-ish "passed"
# R=\Answered S=\Seen T=\Deleted. "P" has no IMAP flag; Dovecot keeps it in file
# names only, and so do we, under the name "\\Passed".
SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
PASSED = "\\Passed"
SYSTEM_FLAGS: frozenset[str] = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT, PASSED})


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """A hybrid logical clock reading: physical ms, logical counter, site.

    Totally ordered. Within one register two different changes never share a
    timestamp: the site id is part of it and a site never reuses a (wall_ms,
    counter) pair for one register. (The renames of the mailboxes merged into one
    folder deliberately share one, so that they stay merged.)
    """

    wall_ms: int
    counter: int
    site: str


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """Where a change was made: the n-th change of one incarnation of a site."""

    site: str
    incarnation: int
    counter: int

    @property
    def stream(self) -> Stream:
        return Stream(self.site, self.incarnation)


@dataclass(frozen=True, slots=True, order=True)
class Stream:
    """One incarnation of one site: the unit a version vector counts."""

    site: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class VersionVector(Mapping[Stream, int]):
    """For each stream, the highest counter ``n`` such that 1..n are all held.

    Immutable. Missing streams count as 0. This is what a site acknowledges.
    """

    entries: tuple[tuple[Stream, int], ...] = ()
    _index: dict[Stream, int] = field(default_factory=dict, init=False, repr=False, compare=False,
                                      hash=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted((s, n) for s, n in self.entries if n > 0))
        object.__setattr__(self, "entries", ordered)
        object.__setattr__(self, "_index", dict(ordered))

    @classmethod
    def of(cls, items: Mapping[Stream, int]) -> VersionVector:
        return cls(tuple(items.items()))

    def __getitem__(self, key: Stream) -> int:
        return self._index[key]

    def get_count(self, key: Stream) -> int:
        return self._index.get(key, 0)

    def __iter__(self) -> Iterator[Stream]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __hash__(self) -> int:
        return hash(self.entries)

    def covers(self, dot: Dot) -> bool:
        return self._index.get(dot.stream, 0) >= dot.counter


@dataclass(frozen=True, slots=True, order=True)
class MailboxRef:
    user: str
    guid: str


@dataclass(frozen=True, slots=True, order=True)
class MessageRef:
    mailbox: MailboxRef
    guid: str
    body: str  # SHA-256 of the raw message bytes, lowercase hex


# --- operations: what a change does -------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailboxCreated:
    """A mailbox came into existence with this name.

    ``parent`` is the GUID of the parent mailbox, or None for a top-level
    mailbox; ``name`` is the leaf name (Unicode, no hierarchy separator unless
    the intermediate levels are not mailboxes themselves, then the path below
    the nearest mailbox ancestor joined with "/").
    """

    mailbox: MailboxRef
    parent: str | None
    name: str
    uidvalidity: int
    special_use: str | None = None


@dataclass(frozen=True, slots=True)
class MailboxRenamed:
    mailbox: MailboxRef
    parent: str | None
    name: str


@dataclass(frozen=True, slots=True)
class MailboxDeleted:
    """The deleting site removed the mailbox; the messages it had seen in it are
    expunged by separate MessageExpunged changes carried alongside."""

    mailbox: MailboxRef


@dataclass(frozen=True, slots=True)
class SubscriptionSet:
    mailbox: MailboxRef
    subscribed: bool


@dataclass(frozen=True, slots=True)
class MessageAdded:
    """A message instance appeared (delivery, append, copy or the target of a move).

    ``flags`` are its flags and keywords at that moment.
    """

    message: MessageRef
    size: int
    internal_date: int  # seconds since the epoch
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MessageExpunged:
    message: MessageRef


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    """Per-flag changes: each name in ``added`` became set, in ``removed`` cleared."""

    message: MessageRef
    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()


Operation = (
    MailboxCreated
    | MailboxRenamed
    | MailboxDeleted
    | SubscriptionSet
    | MessageAdded
    | MessageExpunged
    | FlagsChanged
)


@dataclass(frozen=True, slots=True)
class Change:
    """One change record: what happened (``op``), where (``dot``), when (``ts``)."""

    dot: Dot
    ts: Timestamp
    op: Operation


@dataclass(frozen=True, slots=True)
class Body:
    """A message body travelling in a bundle, content-addressed by its SHA-256."""

    sha256: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Want:
    """A request by the bundle's origin for a message body it needs and lacks.

    Sent when a peer assumed the body was already here (it had acknowledged some
    instance of it) but the copy was expunged here meanwhile. The peer answers
    with the body in its next bundle.
    """

    sha256: str


Record = Change | Body | Want


def derived_mailbox_guid(user: str, path: tuple[str, ...]) -> str:
    """The GUID a mailbox gets when the store records none (no dovecot-uidlist).

    Derived from the user and the mailbox name, so two sites initialised on copies of
    one store agree on it without talking (design §3.1 rule 9). Only used the first
    time a folder is seen; afterwards the state index remembers it, so a rename keeps it.
    """
    material = "\0".join(("bundlesync-mailbox-v1", user, *path)).encode("utf-8")
    return hashlib.sha256(material).hexdigest()[:32]
