"""Failures the model state machine found, replayed step by step as named tests.

Each test drives :class:`~stateful.test_replication.Replication` through the
exact steps Hypothesis reported (the machine's rules called directly), so the
case runs on every commit whatever the examples a profile draws.
"""

from __future__ import annotations

from .test_replication import Replication


class _Draws:
    """Stands in for ``st.data()``: hands out the given values in order."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def draw(self, strategy: object) -> object:
        return self.values.pop(0)


def _three_sites() -> Replication:
    machine = Replication()
    machine.start(count=3, skews=[0, 0, 0, 0, 0])
    return machine


def test_regression_a_merged_away_folder_that_steps_aside_keeps_its_live_children() -> None:
    # s1 renames Archive to Sent and creates Sent/Sent in it; s0, not knowing,
    # creates Archive/Sent and Archive/Sent/Sent. The two "Sent" children of
    # Archive are merged (rule 6) and s0's goes away; its own child lives on.
    # The plan moved the merged-away folder aside to make room for the
    # canonical one, and its live child went along and stayed under
    # "bundlesync-retired-...": the store no longer matched the merge.
    machine = _three_sites()
    machine.subscribe(0, _Draws(("Archive",), False))  # type: ignore[arg-type]
    machine.rename_mailbox(1, _Draws(("Archive",), None, "Sent"))  # type: ignore[arg-type]
    machine.export(inbound=False, index=1)
    machine.create_mailbox(1, _Draws(("Sent",), "Sent"))  # type: ignore[arg-type]
    machine.create_mailbox(0, _Draws(("Archive",), "Sent"))  # type: ignore[arg-type]
    machine.deliver_bundle(_Draws(0))  # type: ignore[arg-type]
    machine.time_passes(4)
    machine.create_mailbox(0, _Draws(("Archive", "Sent"), "Sent"))  # type: ignore[arg-type]
    machine.teardown()
    paths = {r.path for r in machine.sites[0].folders().values()}
    assert ("Sent", "Sent", "Sent") in paths


def test_regression_rename_onto_a_created_name_then_children_on_either_side() -> None:
    # The hierarchy case first reported: s1 renames Archive to Sent while s0
    # creates Sent; then Sent/Old and Archive/Old are created on either side
    # (s2 still knows Archive by its old name).
    for created_first in (False, True):
        machine = _three_sites()
        steps = [
            lambda m: m.rename_mailbox(1, _Draws(("Archive",), None, "Sent")),
            lambda m: m.create_mailbox(0, _Draws(None, "Sent")),
        ]
        for step in steps[::-1] if created_first else steps:
            step(machine)
            machine.time_passes(1000)
        machine.create_mailbox(0, _Draws(("Sent",), "Old"))  # type: ignore[arg-type]
        machine.create_mailbox(1, _Draws(("Sent",), "Old"))  # type: ignore[arg-type]
        machine.create_mailbox(0, _Draws(("Archive",), "Old"))  # type: ignore[arg-type]
        machine.create_mailbox(2, _Draws(("Archive",), "Old"))  # type: ignore[arg-type]
        machine.export(inbound=True, index=1)
        machine.deliver_bundle(_Draws(0))  # type: ignore[arg-type]
        machine.teardown()
        paths = {r.path for r in machine.sites[0].folders().values()}
        assert ("Sent", "Old") in paths
