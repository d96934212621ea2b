"""The pure replication core: no file system, no clock, no randomness.

* :mod:`~bundlesync.core.model` -- shared value types (identities, dots, changes).
* :mod:`~bundlesync.core.hlc` -- hybrid logical clocks.
* :mod:`~bundlesync.core.vv` -- dot sets, acknowledgements, restore detection.
* :mod:`~bundlesync.core.state` -- per-key registers and their joins (the conflict rules).
* :mod:`~bundlesync.core.names` -- the resolved mailbox tree of a user.
* :mod:`~bundlesync.core.plan` -- store actions from a merge.
* :mod:`~bundlesync.core.merge` -- an in-memory replica folding changes.

The rules are written down in ``docs/conflict-rules.md``.
"""
