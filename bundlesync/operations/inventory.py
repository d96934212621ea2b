"""Recording the inventory ``init`` takes: one user's message adds folded at once.

The inventory is what the store already holds, recorded at the inventory
timestamp (``core.state.inventory_timestamp``). Every message of the store is an
add, so the scan's usual path -- a look-up of the dot, a read of the register, a
write of it, a pending mark and the log entry, five statements per message --
becomes two bulk statements per user: the registers are computed in memory
(the index held no message of the user before), then written and logged with
``executemany`` in the scan's transaction.

The adds are not marked pending: pending means "the store must be brought in
line with the register", and these registers were just read from the store, so
the first export would re-apply every message of the store only to change
nothing. Mailbox changes (a few per user) take the usual path, pending marks
included, so the first apply still checks the user's folder tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from bundlesync.core.model import Change, MessageAdded
from bundlesync.core.state import MessageState, apply_to_message, inventory_timestamp
from bundlesync.operations.ledger import fold_change, load_message
from bundlesync.operations.scandiff import Planned
from bundlesync.operations.site import Site
from bundlesync.state.codec import encode_message
from bundlesync.state.index import StateIndex


class InventoryWritten:
    """What the earlier batches of one inventory wrote, so that a later batch reads a
    register only where one may exist.

    A user with no message before the inventory has, in the index, only the
    registers this inventory wrote. Their keys are kept as hashes (about 60 bytes
    each, not the register): a hash not kept means surely no register; a kept one
    means one is read (a collision costs one needless read, never a wrong state).
    """

    __slots__ = ("_fresh", "_hashes")

    def __init__(self) -> None:
        self._fresh: dict[str, bool] = {}
        self._hashes: set[int] = set()

    def may_exist(self, index: StateIndex, key: tuple[str, str, str, str]) -> bool:
        """Whether the index may hold a register for ``key`` (user, mailbox, guid, body)."""
        user = key[0]
        fresh = self._fresh.get(user)
        if fresh is None:
            fresh = self._fresh[user] = not index.has_messages(user)
        return not fresh or hash(key) in self._hashes

    def wrote(self, keys: Iterable[tuple[str, str, str, str]]) -> None:
        self._hashes.update(hash(key) for key in keys)


def record_inventory(site: Site, planned: Sequence[Planned], *,
                     count: Callable[[Planned], None],
                     written: InventoryWritten | None = None) -> None:
    """Give each operation its dot at the inventory timestamp and fold it (inside the
    caller's transaction); ``count`` is told of each group recorded. ``written`` is
    shared by the batches of one inventory."""
    ops = [op for group in planned for op in group.ops]
    adds: list[Change] = []
    for change in site.new_changes_at(ops, inventory_timestamp(site.site_id)):
        if isinstance(change.op, MessageAdded):
            adds.append(change)
        else:
            fold_change(site.index, change)
    for group in planned:
        count(group)
    if adds:
        fold_adds(site, adds, written=written)


def fold_adds(site: Site, adds: Sequence[Change], *,
              written: InventoryWritten | None = None) -> None:
    """Log and fold message adds with new dots, in bulk, without pending marks.

    ``written`` carries what earlier batches of the same inventory wrote (without
    it, this call is taken as the first)."""
    index = site.index
    if written is None:
        written = InventoryWritten()
    states: dict[tuple[str, str, str, str], MessageState] = {}
    logged: list[tuple[Change, str, str, str | None]] = []
    for change in adds:
        op = change.op
        assert isinstance(op, MessageAdded)
        ref = op.message
        user, mailbox = ref.mailbox.user, ref.mailbox.guid
        key = (user, mailbox, ref.guid, ref.body)
        before = states.get(key)
        if before is None and written.may_exist(index, key):
            before = load_message(index, ref)
        # Two files of one folder may hold the same instance: the second add folds
        # into the register the first one made.
        states[key] = apply_to_message(before, change)
        logged.append((change, user, mailbox, ref.body))
    index.store_messages((*key, state.alive, encode_message(state))
                         for key, state in states.items())
    index.add_changes(logged)
    written.wrote(states)
