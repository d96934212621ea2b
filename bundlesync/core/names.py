"""Resolve a user's mailbox tree from the registers of all of that user's mailboxes.

Each mailbox register (:class:`~bundlesync.core.state.MailboxState`) holds its
own name as ``(parent GUID, leaf name)`` in a last-writer-wins register, so the
replicated state has no "tree" that concurrent changes could break. The tree is
*derived*, deterministically, from the set of registers: every site that holds
the same registers computes the same tree, whatever order changes arrived in.
Naming conflicts are resolved in this one explicit step, not by repairing a
tree with renames in a loop (the fragile part of dsync).

The rules, in order (each with an example in ``docs/conflict-rules.md``):

1. **Existence.** A mailbox exists if it was created (a name is known) and it
   was not deleted, or its name register is newer than the delete, or it holds
   live mail (rule 5: a delete removes only what the deleting site had seen).
   A mailbox holding the name INBOX from its creation always exists.
2. **Parents.** A mailbox's path is its parent's path plus its leaf name. A
   parent that does not exist still lends its name, so a rename into a deleted
   parent keeps the child, under that name. A parent GUID that is not known at
   all (its create has not arrived) counts as the top level.
3. **Cycles.** Concurrent renames can make mailboxes each other's ancestors
   (A -> B/A on one site, B -> A/B on another). In every such cycle the mailbox
   with the *oldest* name register goes to the top level with its leaf name;
   the later renames stand.
4. **INBOX.** A top-level leaf spelled INBOX in any case is ``INBOX``. A mailbox
   that holds INBOX from its creation keeps it; a rename never wins INBOX.
5. **Same full name.** Two existing mailboxes with one path that both hold the
   name from their creation (both sites auto-created "Sent") are *merged*: the
   higher GUID is the ``canonical`` mailbox of both (rule 6, as dsync). So are
   mailboxes renamed in one operation (a merged folder renamed: one rename per
   member, all with one timestamp). Otherwise -- one got there by a rename --
   the unit with the later name register keeps the name and the other gets
   ``<name>-<first 8 hex digits of its GUID>``: nothing is merged and nothing
   lost.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from bundlesync.core.model import MailboxRef, Timestamp
from bundlesync.core.state import FlagRegister, MailboxState, empty_mailbox

__all__ = ["INBOX_PATH", "FolderPath", "ResolvedMailbox", "folder_paths", "resolve_mailboxes"]

FolderPath = tuple[str, ...]
INBOX_PATH: FolderPath = ("INBOX",)

_NEVER = Timestamp(-1, -1, "")


@dataclass(frozen=True, slots=True)
class ResolvedMailbox:
    """Where one mailbox is in the user's resolved tree.

    ``path``: its full name. ``canonical``: the GUID of the mailbox whose folder
    holds its mail (itself unless it was merged with a same-name mailbox).
    ``exists``: False for a deleted mailbox (it may still appear as a path
    component of existing children). For merged mailboxes ``subscribed``,
    ``uidvalidity`` and ``special_use`` are those of the merged folder.
    """

    guid: str
    path: FolderPath
    canonical: str
    exists: bool
    subscribed: bool
    uidvalidity: int
    special_use: str | None

    @property
    def has_folder(self) -> bool:
        """Whether this mailbox is a folder in the store (exists and is canonical)."""
        return self.exists and self.canonical == self.guid


def folder_paths(resolved: Mapping[str, ResolvedMailbox]) -> dict[str, FolderPath]:
    """Canonical GUID -> path of every folder the store should hold."""
    return {g: r.path for g, r in resolved.items() if r.has_folder}


_Order = tuple[bool, Timestamp, bool, str, str, str]


def _register_order(m: MailboxState) -> _Order:
    return (
        m.name_ts is not None,
        m.name_ts or _NEVER,
        m.renamed,
        m.parent or "",
        m.name,
        m.ref.guid,
    )


def _own_existence(m: MailboxState, holds_live_mail: bool) -> bool:
    if holds_live_mail:
        return True
    if m.name_ts is None and m.created_ts is None:
        return False
    if m.delete_ts is None:
        return True
    newest = max(t for t in (m.name_ts, m.created_ts) if t is not None)
    return newest > m.delete_ts


def _break_cycles(parent: dict[str, str | None], order: Mapping[str, _Order]) -> None:
    """Make the parent relation a forest, in place (rule 3)."""
    done: set[str] = set()
    for start in sorted(parent):
        trail: list[str] = []
        on_trail: set[str] = set()
        node: str | None = start
        while node is not None and node not in done and node not in on_trail:
            trail.append(node)
            on_trail.add(node)
            node = parent[node]
        if node is not None and node in on_trail:
            cycle = trail[trail.index(node):]
            oldest = min(cycle, key=lambda g: order[g])
            parent[oldest] = None
        done.update(trail)


def _suffixed(path: FolderPath, guid: str, taken: set[FolderPath]) -> FolderPath:
    head, leaf = path[:-1], path[-1]
    for candidate in (f"{leaf}-{guid[:8]}", f"{leaf}-{guid}"):
        if (*head, candidate) not in taken:
            return (*head, candidate)
    n = 2
    while (*head, f"{leaf}-{guid}-{n}") in taken:
        n += 1
    return (*head, f"{leaf}-{guid}-{n}")


def _with_unknown_live(
    mailboxes: Mapping[str, MailboxState], live: set[str]
) -> Mapping[str, MailboxState]:
    """Mail for a mailbox whose create has not arrived: show it, never hide it."""
    if live <= mailboxes.keys():
        return mailboxes
    users = {m.ref.user for m in mailboxes.values()}
    user = users.pop() if len(users) == 1 else ""
    extended = dict(mailboxes)
    for g in live - mailboxes.keys():
        extended[g] = empty_mailbox(MailboxRef(user, g))
    return extended


def _rule_existence(mailboxes: Mapping[str, MailboxState], live: set[str]) -> dict[str, bool]:
    """Rule 1, existence: created and not deleted, renamed after the delete, or
    holding live mail (a delete removes only what the deleting site had seen)."""
    return {g: _own_existence(m, g in live) for g, m in mailboxes.items()}


@dataclass(slots=True)
class _Names:
    """Each mailbox's leaf name (levels), parent and whether it holds its name
    from its creation (not from a rename)."""

    leaf: dict[str, FolderPath]
    parent: dict[str, str | None]
    creation_name: dict[str, bool]


def _rule_parents(mailboxes: Mapping[str, MailboxState]) -> _Names:
    """Rule 2, parents: a path is the parent's path plus the leaf name; a parent
    that is not known at all counts as the top level, a known one (deleted or
    not) lends its name."""
    names = _Names({}, {}, {})
    for g in sorted(mailboxes):
        m = mailboxes[g]
        parts = tuple(p for p in m.name.split("/") if p) if m.name_ts is not None else ()
        if not parts:
            names.leaf[g] = (f"unnamed-{g[:8]}",)
            names.parent[g] = None
            names.creation_name[g] = False
        else:
            names.leaf[g] = parts
            names.parent[g] = m.parent if m.parent in mailboxes and m.parent != g else None
            names.creation_name[g] = not m.renamed
    return names


def _rule_inbox(names: _Names, exists: dict[str, bool]) -> None:
    """Rule 4, INBOX: a top-level leaf spelled INBOX in any case is ``INBOX``; a
    mailbox holding it from its creation always exists (in place)."""
    for g in sorted(names.leaf):
        leaf = names.leaf[g]
        if names.parent[g] is None and leaf[0].upper() == "INBOX":
            names.leaf[g] = ("INBOX", *leaf[1:])
            if len(leaf) == 1 and names.creation_name[g]:
                exists[g] = True


def _path_lengths(names: _Names) -> dict[str, int]:
    """Number of levels of every mailbox's full path (parents are a forest)."""
    depth: dict[str, int] = {}
    for g in sorted(names.leaf):
        # Iterative: trees can be deep, recursion limits are not ours to spend.
        chain = []
        node: str | None = g
        while node is not None and node not in depth:
            chain.append(node)
            node = names.parent[node]
        base = depth[node] if node is not None else 0
        for n in reversed(chain):
            base += len(names.leaf[n])
            depth[n] = base
    return depth


_Unit = tuple[str, list[str]]  # (canonical GUID, member GUIDs) of one folder


def _units_at_one_path(
    members: list[str], mailboxes: Mapping[str, MailboxState], names: _Names
) -> tuple[list[_Unit], bool]:
    """Rule 5 (rule 6 of the design), which mailboxes at one path are one folder:
    all that hold the name from their creation (the higher GUID canonical), and
    each set renamed in one operation (one name register: same timestamp, parent
    and name). Every other renamed mailbox is a unit of its own. Returns the
    units, creation holders first, and whether there are creation holders."""
    holders = [g for g in members if names.creation_name[g]]
    units: list[_Unit] = []
    if holders:
        units.append((max(holders), holders))
    # Two renames made apart never share a timestamp, so they never merge.
    together: dict[tuple[Timestamp, str, str], list[str]] = {}
    for g in members:
        m = mailboxes[g]
        if names.creation_name[g]:
            continue
        if m.name_ts is not None:
            together.setdefault((m.name_ts, m.parent or "", m.name), []).append(g)
        else:
            units.append((g, [g]))
    units.extend((max(group), group) for _, group in sorted(together.items()))
    return units, bool(holders)


def _rule_same_full_name(
    path: FolderPath, members: list[str], mailboxes: Mapping[str, MailboxState],
    names: _Names, taken: set[FolderPath],
) -> dict[str, tuple[FolderPath, str]]:
    """Rule 5, same full name: merged units share a folder; of several units the
    one with the newest name register keeps the name (INBOX only its creation
    holders), the others get ``<name>-<GUID prefix>``. Returns each member's
    path and canonical GUID."""
    units, has_holders = _units_at_one_path(members, mailboxes, names)
    if path == INBOX_PATH:
        winner = units[0] if has_holders else None
    else:
        winner = max(
            units, key=lambda u: (max(_register_order(mailboxes[x]) for x in u[1]), u[0])
        )
    placed: dict[str, tuple[FolderPath, str]] = {}
    for unit in units:
        unit_path = path if unit is winner else _suffixed(path, unit[0], taken)
        taken.add(unit_path)
        for g in unit[1]:
            placed[g] = (unit_path, unit[0])
    return placed


def _place_all(
    mailboxes: Mapping[str, MailboxState], names: _Names, exists: dict[str, bool]
) -> tuple[dict[str, FolderPath], dict[str, str]]:
    """Full paths and canonical GUIDs, one level of depth at a time (a parent's
    final path, suffix included, is known before its children are placed)."""
    depth = _path_lengths(names)
    final: dict[str, FolderPath] = {}
    canonical: dict[str, str] = {g: g for g in mailboxes}
    guids = sorted(mailboxes)
    for length in sorted(set(depth.values())):
        level = [g for g in guids if depth[g] == length]
        tentative: dict[str, FolderPath] = {}
        for g in level:
            p = names.parent[g]
            tentative[g] = (final[p] if p is not None else ()) + names.leaf[g]
        taken = set(tentative.values())
        groups: dict[FolderPath, list[str]] = {}
        for g in level:
            if exists[g]:
                groups.setdefault(tentative[g], []).append(g)
            else:
                final[g] = tentative[g]
        for path in sorted(groups):
            members = groups[path]
            if len(members) == 1 and (path != INBOX_PATH or names.creation_name[members[0]]):
                final[members[0]] = path
                continue
            for g, (where, head) in _rule_same_full_name(
                    path, members, mailboxes, names, taken).items():
                final[g], canonical[g] = where, head
    return final, canonical


def _merged_subscription(group: list[str], mailboxes: Mapping[str, MailboxState]) -> bool:
    """Rule 7 for a merged folder: the newest subscription change of its members."""
    subscription: FlagRegister | None = None
    for x in group:
        reg = mailboxes[x].subscription
        if reg is not None and (subscription is None or reg.key() > subscription.key()):
            subscription = reg
    return subscription is not None and subscription.value


def _merged_special_use(
    head: MailboxState, group: list[str], mailboxes: Mapping[str, MailboxState]
) -> str | None:
    """The canonical mailbox's special use, else the highest member's."""
    if head.special_use is not None:
        return head.special_use
    return next((mailboxes[x].special_use for x in sorted(group, reverse=True)
                 if mailboxes[x].special_use is not None), None)


def resolve_mailboxes(
    mailboxes: Mapping[str, MailboxState], *, live: Collection[str]
) -> dict[str, ResolvedMailbox]:
    """The resolved tree of one user's mailboxes (the rules of the module docstring).

    ``mailboxes`` maps each mailbox GUID to its register; ``live`` holds the GUIDs
    of mailboxes with at least one alive message. Returns an entry for every
    mailbox given (deleted ones included, with ``exists=False``).
    """
    live_set = set(live)
    mailboxes = _with_unknown_live(mailboxes, live_set)
    exists = _rule_existence(mailboxes, live_set)
    names = _rule_parents(mailboxes)
    _break_cycles(names.parent, {g: _register_order(m) for g, m in mailboxes.items()})
    _rule_inbox(names, exists)
    final, canonical = _place_all(mailboxes, names, exists)

    members_of: dict[str, list[str]] = {}
    for g in sorted(mailboxes):
        if exists[g]:
            members_of.setdefault(canonical[g], []).append(g)
    result: dict[str, ResolvedMailbox] = {}
    for g in sorted(mailboxes):
        m = mailboxes[g]
        group = members_of.get(canonical[g], [g]) if exists[g] else [g]
        head = mailboxes[canonical[g]]
        special_use = _merged_special_use(head, group, mailboxes)
        result[g] = ResolvedMailbox(
            guid=g,
            path=final[g],
            canonical=canonical[g],
            exists=exists[g],
            subscribed=_merged_subscription(group, mailboxes),
            uidvalidity=head.uidvalidity if exists[g] else m.uidvalidity,
            special_use=special_use if exists[g] else m.special_use,
        )
    return result
