"""Named crash points, for the kill -9 tests.

``BUNDLESYNC_CRASH_AT=<name>:<n>`` in the environment makes the process die
abruptly (``os._exit``, like kill -9: no cleanup, no rollback, no flush) the
n-th time it passes the point ``name``. Unset, a pass costs one dict lookup.
Points: ``ingest`` (after a bundle's records are folded, before the commit),
``apply`` (after each store action, before the index records it), ``written``
(after a store batch's messages are in ``tmp/``, linked from the spool or
written, before they are synced and named), ``deliver``
(after each message of a store batch is named in ``cur/``, before the batch's
directories are synced), ``batch`` (after a store batch is durable, before the
index records it), ``folder``
(after each folder action), ``export`` (after a bundle is written, before it is
recorded as sent), ``restore`` (after each restored message, before its batch is
made durable), ``restore-folder`` (after a mailbox's messages are restored, before
its UIDs are written), ``stamps`` (after an apply's last write to the store,
before the touched folders' stamps are checked and kept), ``stamp-listed``
(after such a folder is listed, before its stamp is read again).

:func:`acting_at` runs a function at a point instead, in the same process: a
test delivers a message there, as a delivery agent racing the run would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_counts: dict[str, int] = {}
# In-process actions run at a point (tests: another program acting at that moment).
_actions: dict[str, Callable[[], None]] = {}
_target: tuple[str, int] | None = None
_spec = os.environ.get("BUNDLESYNC_CRASH_AT")
if _spec:
    _name, _, _n = _spec.partition(":")
    _target = (_name, int(_n or "1"))

CRASH_EXIT = 137


def reached(name: str) -> None:
    """Pass the crash point ``name`` (dies here if the environment says so)."""
    if _actions:
        action = _actions.get(name)
        if action is not None:
            action()
    if _target is None or _target[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == _target[1]:
        os._exit(CRASH_EXIT)


@contextmanager
def acting_at(name: str, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` each time the point ``name`` is passed, inside the block."""
    _actions[name] = action
    try:
        yield
    finally:
        del _actions[name]
