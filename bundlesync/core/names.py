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


def resolve_mailboxes(
    mailboxes: Mapping[str, MailboxState], *, live: Collection[str]
) -> dict[str, ResolvedMailbox]:
    """The resolved tree of one user's mailboxes.

    ``mailboxes`` maps each mailbox GUID to its register; ``live`` holds the GUIDs
    of mailboxes with at least one alive message. Returns an entry for every
    mailbox given (deleted ones included, with ``exists=False``).
    """
    live_set = set(live)
    if not live_set <= mailboxes.keys():
        # Mail arrived for a mailbox whose create has not: show it, never hide it.
        users = {m.ref.user for m in mailboxes.values()}
        user = users.pop() if len(users) == 1 else ""
        mailboxes = dict(mailboxes)
        for g in live_set - mailboxes.keys():
            mailboxes[g] = empty_mailbox(MailboxRef(user, g))
    guids = sorted(mailboxes)
    exists = {g: _own_existence(mailboxes[g], g in live_set) for g in guids}

    leaf: dict[str, FolderPath] = {}
    parent: dict[str, str | None] = {}
    creation_name: dict[str, bool] = {}
    for g in guids:
        m = mailboxes[g]
        parts = tuple(p for p in m.name.split("/") if p) if m.name_ts is not None else ()
        if not parts:
            parts = (f"unnamed-{g[:8]}",)
            parent[g] = None
            creation_name[g] = False
        else:
            parent[g] = m.parent if m.parent in mailboxes and m.parent != g else None
            creation_name[g] = not m.renamed
        leaf[g] = parts

    _break_cycles(parent, {g: _register_order(mailboxes[g]) for g in guids})

    inbox_holder: set[str] = set()
    for g in guids:
        if parent[g] is None and leaf[g][0].upper() == "INBOX":
            leaf[g] = ("INBOX", *leaf[g][1:])
            if len(leaf[g]) == 1 and creation_name[g]:
                inbox_holder.add(g)
                exists[g] = True

    depth: dict[str, int] = {}

    def path_length(g: str) -> int:
        # Iterative: trees can be deep, recursion limits are not ours to spend.
        chain = []
        node: str | None = g
        while node is not None and node not in depth:
            chain.append(node)
            node = parent[node]
        base = depth[node] if node is not None else 0
        for n in reversed(chain):
            base += len(leaf[n])
            depth[n] = base
        return depth[g]

    for g in guids:
        path_length(g)

    final: dict[str, FolderPath] = {}
    canonical: dict[str, str] = {g: g for g in guids}
    for length in sorted(set(depth.values())):
        level = [g for g in guids if depth[g] == length]
        tentative: dict[str, FolderPath] = {}
        for g in level:
            p = parent[g]
            tentative[g] = (final[p] if p is not None else ()) + leaf[g]
        taken = set(tentative.values())
        groups: dict[FolderPath, list[str]] = {}
        for g in level:
            if exists[g]:
                groups.setdefault(tentative[g], []).append(g)
            else:
                final[g] = tentative[g]
        for path in sorted(groups):
            members = groups[path]
            if len(members) == 1 and (path != INBOX_PATH or creation_name[members[0]]):
                final[members[0]] = path
                continue
            holders = [g for g in members if creation_name[g]]
            units: list[tuple[str, list[str]]] = []
            if holders:
                units.append((max(holders), holders))
            # Members renamed in one operation (a merged folder renamed: one
            # rename per member, all with one timestamp) stay merged; two
            # renames made apart never share a timestamp.
            together: dict[tuple[Timestamp, str, str], list[str]] = {}
            for g in members:
                m = mailboxes[g]
                if not creation_name[g] and m.name_ts is not None:
                    together.setdefault((m.name_ts, m.parent or "", m.name), []).append(g)
                elif not creation_name[g]:
                    units.append((g, [g]))
            units.extend((max(group), group) for _, group in sorted(together.items()))
            if path == INBOX_PATH:
                winner = units[0] if holders else None
            else:
                winner = max(
                    units,
                    key=lambda u: (max(_register_order(mailboxes[x]) for x in u[1]), u[0]),
                )
            for unit in units:
                unit_path = path if unit is winner else _suffixed(path, unit[0], taken)
                taken.add(unit_path)
                for g in unit[1]:
                    final[g] = unit_path
                    canonical[g] = unit[0]

    members_of: dict[str, list[str]] = {}
    for g in guids:
        if exists[g]:
            members_of.setdefault(canonical[g], []).append(g)

    result: dict[str, ResolvedMailbox] = {}
    for g in guids:
        m = mailboxes[g]
        group = members_of.get(canonical[g], [g]) if exists[g] else [g]
        head = mailboxes[canonical[g]]
        subscription: FlagRegister | None = None
        for x in group:
            reg = mailboxes[x].subscription
            if reg is not None and (subscription is None or reg.key() > subscription.key()):
                subscription = reg
        special_use = head.special_use
        if special_use is None:
            special_use = next(
                (mailboxes[x].special_use for x in sorted(group, reverse=True)
                 if mailboxes[x].special_use is not None),
                None,
            )
        result[g] = ResolvedMailbox(
            guid=g,
            path=final[g],
            canonical=canonical[g],
            exists=exists[g],
            subscribed=subscription is not None and subscription.value,
            uidvalidity=head.uidvalidity if exists[g] else m.uidvalidity,
            special_use=special_use if exists[g] else m.special_use,
        )
    return result
