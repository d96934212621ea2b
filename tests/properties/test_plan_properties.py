"""Plans are correct for any merge: applied one by one to a strict store that
refuses what a Maildir cannot do, they turn the store of the state before into
exactly the store of the state after."""

from __future__ import annotations

from core.builders import merge_plan
from core.fakestore import FakeStore, projection
from hypothesis import given, settings
from hypothesis import strategies as st

from bundlesync.core.merge import Replica
from bundlesync.core.model import Change
from bundlesync.core.names import ResolvedMailbox
from bundlesync.core.plan import CreateFolder, SetSubscribed, plan_folder_changes

from .strategies import USERS, histories


def store_for(replica: Replica, user: str) -> FakeStore:
    store = FakeStore()
    plan, messages = merge_plan(Replica(), replica, user=user)
    store.apply_merge(plan, messages)
    return store


def check_transition(before: Replica, after: Replica) -> None:
    for user in USERS:
        store = store_for(before, user)
        assert store.snapshot() == projection(before, user)
        plan, messages = merge_plan(before, after, user=user)
        store.apply_merge(plan, messages)
        assert store.snapshot() == projection(after, user)


@settings(max_examples=300)
@given(histories(max_size=25), histories(max_size=12))
def test_plan_of_a_merge_reaches_the_merged_store(
    known: list[Change], incoming: list[Change]
) -> None:
    check_transition(Replica.of(known), Replica.of([*known, *incoming]))


@given(histories(max_size=20), histories(max_size=20))
def test_plan_between_any_two_states_reaches_the_second(
    first: list[Change], second: list[Change]
) -> None:
    check_transition(Replica.of(first), Replica.of(second))


PATH_PARTS = ("A", "B", "C")
GUIDS = tuple(f"{n:032x}" for n in range(1, 7))


@st.composite
def trees(draw: st.DrawFn) -> dict[str, ResolvedMailbox]:
    """A resolved tree drawn directly: folder names from a tiny pool, so that
    swaps, chains, moves into a subtree and reuse of names are common."""
    paths = draw(st.lists(st.lists(st.sampled_from(PATH_PARTS), min_size=1, max_size=3)
                          .map(tuple), unique=True, max_size=len(GUIDS)))
    owners = draw(st.permutations(GUIDS))
    return {
        guid: ResolvedMailbox(guid=guid, path=path, canonical=guid, exists=True,
                              subscribed=draw(st.booleans()), uidvalidity=1, special_use=None)
        for guid, path in zip(owners, paths, strict=False)
    }


@settings(max_examples=500)
@given(trees(), trees())
def test_folder_plan_between_any_two_trees(
    before: dict[str, ResolvedMailbox], after: dict[str, ResolvedMailbox]
) -> None:
    store = FakeStore()
    for guid, entry in sorted(before.items(), key=lambda item: item[1].path):
        store.apply(CreateFolder("u", entry.path, guid, 1))
        store.apply(SetSubscribed("u", entry.path, entry.subscribed))
    plan = plan_folder_changes("u", before, after)
    store.apply_merge(plan, [])
    assert store.folders == {e.path: g for g, e in after.items()}
    assert store.subscribed == {e.path for e in after.values() if e.subscribed}
    # Each old folder's interim path is where it really is between the phases.
    for guid in before:
        interim = plan.interim_path(guid)
        assert interim is not None
        if guid in after:
            assert interim == after[guid].path
