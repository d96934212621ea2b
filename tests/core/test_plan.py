"""Store-action plans: applied to a strict fake store, they turn the store of the
state before a merge into exactly the store of the state after it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bundlesync.core.merge import Replica
from bundlesync.core.model import FLAGGED, SEEN, Change
from bundlesync.core.plan import (
    AddMessage,
    CreateFolder,
    DeleteFolder,
    RemoveMessage,
    RenameFolder,
    SetFlags,
    SetSubscribed,
    collapse_instances,
    plan_message,
)
from bundlesync.core.state import apply_to_message
from core.builders import (
    USER,
    add,
    create,
    delete,
    expunge,
    flags,
    guid,
    merge_plan,
    msg,
    rename,
    subscribe,
)
from core.fakestore import FakeStore, projection


def store_of(replica: Replica) -> FakeStore:
    """A store built from nothing by the plan of the whole state."""
    store = FakeStore()
    plan, messages = merge_plan(Replica(), replica)
    store.apply_merge(plan, messages)
    assert store.snapshot() == projection(replica, USER)
    return store


def check_merge(before: Sequence[Change], more: Sequence[Change]) -> tuple[FakeStore, list[object]]:
    """Apply the plan of merging ``more`` into ``before`` to the store of ``before``."""
    old = Replica.of(before)
    new = Replica.of([*before, *more])
    store = store_of(old)
    plan, messages = merge_plan(old, new)
    store.apply_merge(plan, messages)
    assert store.snapshot() == projection(new, USER)
    return store, [*plan.prepare, *messages, *plan.cleanup]


BASE = [create("INBOX", 0)]


def test_new_tree_creates_parents_before_children() -> None:
    _, actions = check_merge(BASE, [create("Work", 10), create("Deep", 11, parent="Work"),
                                     create("Deeper", 12, parent="Deep")])
    creates = [a.path for a in actions if isinstance(a, CreateFolder)]
    assert creates == [("Work",), ("Work", "Deep"), ("Work", "Deep", "Deeper")]


def test_swapped_names_go_through_a_temporary_name() -> None:
    start = [*BASE, create("A", 10), create("B", 11)]
    _, actions = check_merge(start, [rename("A", 20, name="B"), rename("B", 21, name="A")])
    renames = [a for a in actions if isinstance(a, RenameFolder)]
    assert len(renames) == 3
    assert renames[0].new[0].startswith("bundlesync-tmp-")


def test_chained_renames_need_no_temporary_name() -> None:
    start = [*BASE, create("A", 10), create("B", 11)]
    _, actions = check_merge(start, [rename("B", 20, name="C"), rename("A", 21, name="B")])
    assert actions == [RenameFolder(USER, ("B",), ("C",)), RenameFolder(USER, ("A",), ("B",))]


def test_renaming_a_parent_moves_its_children_in_one_action() -> None:
    start = [*BASE, create("A", 10), create("Kid", 11, parent="A")]
    _, actions = check_merge(start, [rename("A", 20, name="Z")])
    assert actions == [RenameFolder(USER, ("A",), ("Z",))]


def test_moving_a_folder_below_a_new_folder_of_its_old_name() -> None:
    start = [*BASE, create("A", 10)]
    check_merge(start, [create("A2", 20, name="A"), rename("A", 19, parent="A2", name="A")])


def test_delete_and_recreate_with_the_same_name_takes_the_folder_over() -> None:
    old_mail, new_mail = msg("Archive", "old"), msg("Archive2", "new")
    start = [*BASE, create("Archive", 10), add(old_mail, 11)]
    _, actions = check_merge(start, [expunge(old_mail, 20), delete("Archive", 21),
                                     create("Archive2", 22, name="Archive"),
                                     add(new_mail, 23)])
    assert not any(isinstance(a, DeleteFolder) for a in actions)
    assert CreateFolder(USER, ("Archive",), guid("Archive2"), 1) in actions


def test_a_rename_onto_a_deleted_folder_moves_the_deleted_one_aside() -> None:
    start = [*BASE, create("Sent", 10), create("Sent2", 11)]
    _, actions = check_merge(start, [delete("Sent", 20), rename("Sent2", 21, name="Sent")])
    assert isinstance(actions[-1], DeleteFolder)
    assert actions[-1].path[0].startswith("bundlesync-retired-")


def test_same_name_merge_collapses_one_message_in_both_into_one_file() -> None:
    a_copy, b_copy = msg("Sent@a", "k"), msg("Sent@b", "k")
    start = [*BASE, create("Sent@a", 10, "a", name="Sent"), add(a_copy, 11, "a", flags=[SEEN])]
    store, actions = check_merge(start, [create("Sent@b", 10, "b", name="Sent"),
                                         add(b_copy, 12, "b", flags=[FLAGGED])])
    assert not any(isinstance(a, AddMessage | RemoveMessage) for a in actions)
    # Each add says which flags it carried; neither cleared the other's flag.
    assert store.files[("Sent",)] == {("k", a_copy.body): frozenset({SEEN, FLAGGED})}


def test_unmerge_moves_messages_back_to_their_own_folder() -> None:
    only_a, only_b = msg("Sent@a", "ka"), msg("Sent@b", "kb")
    start = [*BASE, create("Sent@a", 10, "a", name="Sent"), add(only_a, 11, "a"),
             create("Sent@b", 10, "b", name="Sent"), add(only_b, 12, "b")]
    higher = max(["Sent@a", "Sent@b"], key=guid)
    store, actions = check_merge(start, [rename(higher, 30, name="Old Sent")])
    assert any(isinstance(a, AddMessage) for a in actions)
    assert len(store.folders) == 3


def test_subscriptions_follow_the_folder_path() -> None:
    start = [*BASE, create("News", 10), subscribe("News", True, 11)]
    store, actions = check_merge(start, [rename("News", 20, name="Feeds")])
    assert SetSubscribed(USER, ("News",), False) in actions
    assert SetSubscribed(USER, ("Feeds",), True) in actions
    assert store.subscribed == {("Feeds",)}


def test_flag_changes_and_expunges_become_file_actions() -> None:
    m1, m2 = msg("INBOX", "m1"), msg("INBOX", "m2")
    start = [*BASE, add(m1, 10), add(m2, 11)]
    _, actions = check_merge(start, [flags(m1, 20, added=[SEEN]), expunge(m2, 21)])
    assert actions == [SetFlags(USER, ("INBOX",), m1, frozenset({SEEN})),
                       RemoveMessage(USER, ("INBOX",), m2)]


def test_plan_message_for_one_instance() -> None:
    m = msg("INBOX", "m1")
    added = apply_to_message(None, add(m, 10, flags=[SEEN]))
    gone = apply_to_message(added, expunge(m, 20))
    inbox = ("INBOX",)
    assert plan_message(USER, None, added, before_path=None, after_path=inbox) == [
        AddMessage(USER, inbox, m, frozenset({SEEN}), added.internal_date, added.size)]
    assert plan_message(USER, added, gone, before_path=inbox, after_path=inbox) == [
        RemoveMessage(USER, inbox, m)]
    moved = plan_message(USER, added, added, before_path=inbox, after_path=("Old",))
    assert [type(a) for a in moved] == [AddMessage, RemoveMessage]
    assert plan_message(USER, added, added, before_path=inbox, after_path=inbox) == []


def test_collapse_takes_the_newest_version_of_each_flag() -> None:
    in_a, in_b = msg("A", "k"), msg("B", "k")
    a = apply_to_message(None, add(in_a, 10, flags=[SEEN]))
    a = apply_to_message(a, flags(in_a, 30, removed=[SEEN]))
    b = apply_to_message(None, add(in_b, 20, flags=[SEEN, FLAGGED]))
    merged = collapse_instances([a, b])
    assert merged.flags == {FLAGGED}
    assert merged.representative == max(in_a, in_b)
    with pytest.raises(ValueError, match="at least one"):
        collapse_instances([])
