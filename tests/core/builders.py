"""Small builders for example tests: readable names in, model values out."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence

from bundlesync.core.merge import Replica
from bundlesync.core.model import (
    Change,
    Dot,
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
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.plan import (
    FolderPlan,
    MessageAction,
    Placed,
    plan_folder_changes,
    plan_messages,
)

USER = "alice@example.org"
_counters: dict[str, itertools.count[int]] = {}


def guid(label: str) -> str:
    """A stable 32-hex GUID for a readable label."""
    return hashlib.sha256(label.encode()).hexdigest()[:32]


def box(label: str) -> MailboxRef:
    return MailboxRef(USER, guid(label))


def body(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def msg(box_label: str, key: str, content: str = "hello") -> MessageRef:
    return MessageRef(box(box_label), key, body(content))


def at(wall: int, site: str = "a", counter: int = 0) -> Timestamp:
    return Timestamp(wall, counter, site)


def change(op: Operation, wall: int, site: str = "a", counter: int = 0) -> Change:
    seq = _counters.setdefault(site, itertools.count(1))
    return Change(Dot(site, 1, next(seq)), at(wall, site, counter), op)


def create(label: str, wall: int, site: str = "a", *, parent: str | None = None,
           name: str | None = None, uidvalidity: int = 1) -> Change:
    return change(
        MailboxCreated(box(label), guid(parent) if parent else None, name or label, uidvalidity),
        wall, site,
    )


def rename(label: str, wall: int, site: str = "a", *, parent: str | None = None,
           name: str) -> Change:
    return change(MailboxRenamed(box(label), guid(parent) if parent else None, name), wall, site)


def delete(label: str, wall: int, site: str = "a") -> Change:
    return change(MailboxDeleted(box(label)), wall, site)


def subscribe(label: str, on: bool, wall: int, site: str = "a") -> Change:
    return change(SubscriptionSet(box(label), on), wall, site)


def add(ref: MessageRef, wall: int, site: str = "a", *, flags: Iterable[str] = (),
        size: int = 100, internal_date: int = 1_700_000_000) -> Change:
    return change(MessageAdded(ref, size, internal_date, frozenset(flags)), wall, site)


def expunge(ref: MessageRef, wall: int, site: str = "a") -> Change:
    return change(MessageExpunged(ref), wall, site)


def flags(ref: MessageRef, wall: int, site: str = "a", *, added: Iterable[str] = (),
          removed: Iterable[str] = ()) -> Change:
    return change(FlagsChanged(ref, frozenset(added), frozenset(removed)), wall, site)


def converge(*histories: Sequence[Change]) -> Replica:
    """Fold the changes of several sites in every order of the sites, each
    change twice, and check that all orders give one state; return it."""
    results = []
    for order in itertools.permutations(histories):
        flat = [c for history in order for c in history]
        results.append(Replica.of(flat + flat[::-1]))
    first = results[0]
    for other in results[1:]:
        assert other == first
    return first


def tree(replica: Replica) -> dict[tuple[str, ...], ResolvedMailbox]:
    """Existing folders of the user by path (the canonical mailbox's entry)."""
    return {r.path: r for r in replica.resolve(USER).values() if r.has_folder}


def path_of(replica: Replica, label: str) -> tuple[str, ...]:
    return replica.resolve(USER)[guid(label)].path


def placed(replica: Replica, *, interim: FolderPlan | None = None,
           user: str = USER) -> list[Placed]:
    """Every message instance of the user with the path of its mailbox's folder.

    With ``interim``, paths are the folders' interim paths under that plan
    (the *before* side of a merge)."""
    resolved = replica.resolve(user)
    result = []
    for ref, state in sorted(replica.messages.items()):
        if ref.mailbox.user != user:
            continue
        entry = resolved.get(ref.mailbox.guid)
        path = None
        if entry is not None and entry.exists:
            if interim is None:
                path = resolved[entry.canonical].path
            else:
                path = interim.interim_path(entry.canonical)
        result.append(Placed(state, path))
    return result


def merge_plan(before: Replica, after: Replica, *,
               user: str = USER) -> tuple[FolderPlan, list[MessageAction]]:
    """The folder plan and message actions that turn ``before`` into ``after``."""
    folder_plan = plan_folder_changes(user, before.resolve(user), after.resolve(user))
    actions = plan_messages(user, before=placed(before, interim=folder_plan, user=user),
                            after=placed(after, user=user))
    return folder_plan, actions
