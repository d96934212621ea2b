"""One example test per conflict rule of design §3.1 and per hierarchy case.

Each test is the worked example of its section in docs/conflict-rules.md, and
each folds the sites' changes in every order (each change twice) before it
looks at the result, so it also checks that the example converges.
"""

from __future__ import annotations

from bundlesync.core.merge import Replica
from bundlesync.core.model import (
    FLAGGED,
    SEEN,
    Change,
    Dot,
    MailboxCreated,
    MessageAdded,
    Operation,
)
from bundlesync.core.names import INBOX_PATH
from bundlesync.core.plan import CreateFolder
from bundlesync.core.state import inventory_timestamp
from core.builders import (
    USER,
    add,
    at,
    box,
    change,
    converge,
    create,
    delete,
    expunge,
    flags,
    guid,
    merge_plan,
    msg,
    path_of,
    rename,
    subscribe,
    tree,
)


def inbox(site: str) -> Change:
    return create("INBOX", 0, site)


# --- rule 1 ------------------------------------------------------------------------


def test_rule1_adds_are_a_union() -> None:
    m1, m2 = msg("INBOX", "m1"), msg("INBOX", "m2")
    site_a = [inbox("a"), add(m1, 1000, "a")]
    site_b = [inbox("b"), add(m2, 1001, "b")]
    merged = converge(site_a, site_b)
    assert merged.messages[m1].alive
    assert merged.messages[m2].alive


def test_rule1_an_instance_exists_until_expunged() -> None:
    m = msg("INBOX", "m1")
    before = converge([inbox("a"), add(m, 1000, "a")])
    after = converge([inbox("a"), add(m, 1000, "a")], [expunge(m, 2000, "b")])
    assert before.messages[m].alive
    assert not after.messages[m].alive


# --- rule 2 ------------------------------------------------------------------------


def test_rule2_expunge_beats_a_later_flag_change() -> None:
    m = msg("INBOX", "m1")
    # B flags the message *after* (in clock terms) A expunged it: still gone.
    merged = converge([add(m, 1000, "a"), expunge(m, 2000, "a")],
                      [flags(m, 3000, "b", added=[FLAGGED])])
    assert not merged.messages[m].alive


def test_rule2_late_add_of_an_expunged_instance_stays_expunged() -> None:
    m = msg("INBOX", "m1")
    # The add reaches the site after the expunge made from it elsewhere.
    merged = converge([expunge(m, 2000, "b")], [add(m, 1000, "a")])
    assert not merged.messages[m].alive


def test_rule2_an_add_and_an_expunge_with_one_timestamp_stay_expunged() -> None:
    m = msg("INBOX", "m1")
    # Only a site restored from an old copy can issue one timestamp twice.
    same = add(m, 1000, "a")
    merged = converge([same], [change(expunge(m, 0).op, 1000, "a")])
    assert merged.messages[m].add_ts == merged.messages[m].expunge_ts
    assert not merged.messages[m].alive


def test_rule2_a_later_readd_revives_the_instance() -> None:
    m = msg("INBOX", "m1")
    # Moved to Archive and back: same base name, so the same instance, re-added later.
    merged = converge([add(m, 1000, "a"), expunge(m, 2000, "a"), add(m, 3000, "a")])
    assert merged.messages[m].alive


# --- rule 3 ------------------------------------------------------------------------


def test_rule3_flags_merge_per_flag() -> None:
    m = msg("INBOX", "m1")
    base = [add(m, 1000, "a")]
    merged = converge(base, [flags(m, 2000, "a", added=[SEEN])],
                      [flags(m, 2000, "b", added=[FLAGGED])])
    assert merged.messages[m].effective_flags() == {SEEN, FLAGGED}


def test_rule3_same_flag_later_timestamp_wins_then_site() -> None:
    m = msg("INBOX", "m1")
    base = [add(m, 1000, "a", flags=[SEEN])]
    later_clear = converge(base, [flags(m, 2000, "a", added=[SEEN])],
                           [flags(m, 2500, "b", removed=[SEEN])])
    assert SEEN not in later_clear.messages[m].effective_flags()
    # Same wall time and counter: the site id decides ("b" > "a"), on every site.
    tie = converge(base, [flags(m, 2000, "b", removed=[SEEN])],
                   [flags(m, 2000, "a", added=[SEEN])])
    assert SEEN not in tie.messages[m].effective_flags()


def test_rule3_a_flag_change_older_than_the_add_is_superseded() -> None:
    m = msg("INBOX", "m1")
    # A re-add (moved back) carries the flags the message had then.
    merged = converge([add(m, 1000, "a"), flags(m, 2000, "a", added=[SEEN]),
                       expunge(m, 2500, "a"), add(m, 3000, "a", flags=[FLAGGED])])
    assert merged.messages[m].effective_flags() == {FLAGGED}


# --- rule 4 ------------------------------------------------------------------------


def test_rule4_later_rename_wins_and_children_move_with_the_parent() -> None:
    common = [inbox("a"), create("Work", 1000), create("Projects", 1001, parent="Work")]
    site_a = [rename("Work", 2000, "a", name="Job")]
    site_b = [rename("Work", 2500, "b", name="Office")]
    merged = converge(common, site_a, site_b)
    assert path_of(merged, "Work") == ("Office",)
    assert path_of(merged, "Projects") == ("Office", "Projects")


# --- rule 5 ------------------------------------------------------------------------


def test_rule5_delete_removes_only_what_the_deleting_site_had_seen() -> None:
    old, new = msg("Lists", "old"), msg("Lists", "new")
    common = [inbox("a"), create("Lists", 1000), add(old, 1100)]
    # A deletes Lists: expunges what it had seen in it, then deletes the mailbox.
    site_a = [expunge(old, 2000, "a"), delete("Lists", 2001, "a")]
    # B receives new mail into Lists meanwhile.
    site_b = [add(new, 1900, "b")]
    merged = converge(common, site_a, site_b)
    assert not merged.messages[old].alive
    assert merged.messages[new].alive
    assert merged.resolve(USER)[guid("Lists")].exists
    assert path_of(merged, "Lists") == ("Lists",)


def test_rule5_delete_without_concurrent_mail_removes_the_mailbox() -> None:
    old = msg("Lists", "old")
    merged = converge([inbox("a"), create("Lists", 1000), add(old, 1100)],
                      [expunge(old, 2000, "a"), delete("Lists", 2001, "a")])
    assert not merged.resolve(USER)[guid("Lists")].exists
    assert ("Lists",) not in tree(merged)


# --- rule 6 ------------------------------------------------------------------------


def test_rule6_two_mailboxes_with_the_same_name_are_merged() -> None:
    sent_a, sent_b = msg("Sent@a", "x"), msg("Sent@b", "y")
    site_a = [create("Sent@a", 1000, "a", name="Sent"), add(sent_a, 1100, "a")]
    site_b = [create("Sent@b", 1000, "b", name="Sent"), add(sent_b, 1100, "b")]
    merged = converge(site_a, site_b)
    resolved = merged.resolve(USER)
    higher = max(guid("Sent@a"), guid("Sent@b"))
    assert resolved[guid("Sent@a")].canonical == higher
    assert resolved[guid("Sent@b")].canonical == higher
    assert resolved[guid("Sent@a")].path == resolved[guid("Sent@b")].path == ("Sent",)
    assert list(tree(merged)) == [("Sent",)]


def test_rule6_a_merged_folder_renamed_in_one_operation_stays_merged() -> None:
    common = [create("Sent@a", 1000, "a", name="Sent"), create("Sent@b", 1000, "b", name="Sent")]
    # The rename of the merged folder is one rename per member, with one timestamp.
    together = [change(rename(label, 0, name="Outbox").op, 2000, "a")
                for label in ("Sent@a", "Sent@b")]
    merged = converge(common, together)
    assert list(tree(merged)) == [("Outbox",)]
    assert path_of(merged, "Sent@a") == path_of(merged, "Sent@b") == ("Outbox",)
    # Renamed one by one (two timestamps), they separate: nothing merges by accident.
    apart = converge(common, [rename("Sent@a", 2000, "a", name="Outbox"),
                              rename("Sent@b", 2001, "a", name="Outbox")])
    assert len(tree(apart)) == 2


# --- rule 7 ------------------------------------------------------------------------


def test_rule7_subscription_later_change_wins() -> None:
    merged = converge([create("News", 1000), subscribe("News", True, 1500, "a")],
                      [subscribe("News", False, 2000, "b")])
    assert not merged.resolve(USER)[guid("News")].subscribed


def test_rule7_subscription_tie_subscribed_wins() -> None:
    # Two changes with one timestamp only happen when a restored site re-issues it.
    on = change(subscribe("News", True, 0).op, 2000, "a")
    off = change(subscribe("News", False, 0).op, 2000, "a")
    merged = converge([create("News", 1000)], [on], [off])
    assert merged.resolve(USER)[guid("News")].subscribed


# --- rule 8 ------------------------------------------------------------------------


def test_rule8_one_message_guid_with_two_bodies_keeps_both() -> None:
    first, second = msg("INBOX", "k1", "first body"), msg("INBOX", "k1", "second body")
    merged = converge([inbox("a"), add(first, 1000, "a")], [add(second, 1000, "b")])
    assert first != second
    assert merged.messages[first].alive
    assert merged.messages[second].alive


# --- rule 9 ------------------------------------------------------------------------


def _inventory(site: str, inbox_label: str) -> list[Change]:
    ts = inventory_timestamp(site)
    ops: list[Operation] = [
        MailboxCreated(box(inbox_label), None, "INBOX", 42),
        MailboxCreated(box("Archive"), None, "Archive", 43),
        MessageAdded(msg(inbox_label, "k1"), 100, 1_600_000_000, frozenset({SEEN})),
        MessageAdded(msg("Archive", "k2"), 200, 1_600_000_001, frozenset()),
    ]
    return [Change(Dot(site, 1, n), ts, op) for n, op in enumerate(ops, 1)]


def test_rule9_sites_seeded_from_one_copy_add_nothing_on_first_exchange() -> None:
    site_a, site_b = _inventory("a", "INBOX"), _inventory("b", "INBOX")
    alone = Replica.of(site_a)
    merged = converge(site_a, site_b)
    before = alone.resolve(USER)
    after = merged.resolve(USER)
    folder_plan, message_actions = merge_plan(alone, merged)
    assert folder_plan.actions() == []
    assert message_actions == []
    assert before == after
    assert {r: s.effective_flags() for r, s in merged.messages.items() if s.alive} == {
        r: s.effective_flags() for r, s in alone.messages.items() if s.alive
    }


def test_rule9_seeded_copies_with_different_inbox_guids_merge_into_one_folder() -> None:
    # One copy kept dovecot-uidlist (its own INBOX GUID), the other did not (derived GUID).
    site_a, site_b = _inventory("a", "INBOX"), _inventory("b", "INBOX-derived")
    merged = converge(site_a, site_b)
    folders = tree(merged)
    assert sorted(folders) == [("Archive",), INBOX_PATH]
    # Both instances of k1 land in the one INBOX folder: no message is added,
    # at most the INBOX folder takes the other GUID.
    adopted = []
    for own in (site_a, site_b):
        folder_plan, message_actions = merge_plan(Replica.of(own), merged)
        assert message_actions == []
        adopted += folder_plan.actions()
    higher = max(guid("INBOX"), guid("INBOX-derived"))
    assert adopted == [CreateFolder(USER, INBOX_PATH, higher, 42)]


def test_rule9_any_real_change_wins_over_an_inventory() -> None:
    m = msg("INBOX", "k1")
    site_a = _inventory("a", "INBOX")
    # B was seeded from an older copy in which k1 still existed; A had expunged it.
    site_b = _inventory("b", "INBOX")
    merged = converge([*site_a, expunge(m, 5, "a")], site_b)
    assert not merged.messages[m].alive
    assert at(1, "a") > inventory_timestamp("z")


# --- hierarchy cases -----------------------------------------------------------------


def test_hierarchy_rename_into_a_deleted_parent_keeps_the_child() -> None:
    common = [inbox("a"), create("Old", 1000), create("Notes", 1001)]
    site_a = [delete("Old", 2000, "a")]
    site_b = [rename("Notes", 2100, "b", parent="Old", name="Notes")]
    merged = converge(common, site_a, site_b)
    resolved = merged.resolve(USER)
    assert not resolved[guid("Old")].exists
    assert resolved[guid("Notes")].exists
    assert resolved[guid("Notes")].path == ("Old", "Notes")


def test_hierarchy_two_sites_rename_different_mailboxes_to_the_same_name() -> None:
    common = [inbox("a"), create("Drafts2", 1000), create("Tmp", 1001)]
    site_a = [rename("Drafts2", 2000, "a", name="Keep")]
    site_b = [rename("Tmp", 2500, "b", name="Keep")]
    merged = converge(common, site_a, site_b)
    assert path_of(merged, "Tmp") == ("Keep",)
    assert path_of(merged, "Drafts2") == (f"Keep-{guid('Drafts2')[:8]}",)
    assert len(tree(merged)) == 3


def test_hierarchy_a_rename_onto_a_created_name_is_not_merged() -> None:
    common = [inbox("a"), create("Reports", 1000)]
    site_a = [create("Sent", 2000, "a")]
    site_b = [rename("Reports", 1500, "b", name="Sent")]
    merged = converge(common, site_a, site_b)
    # The create (2000) is newer than the rename (1500): it keeps the name.
    assert path_of(merged, "Sent") == ("Sent",)
    assert path_of(merged, "Reports") == (f"Sent-{guid('Reports')[:8]}",)


def test_hierarchy_concurrent_rename_cycle_is_broken_deterministically() -> None:
    common = [inbox("a"), create("A", 1000), create("B", 1001)]
    site_a = [rename("A", 2000, "a", parent="B", name="A")]  # A -> B/A
    site_b = [rename("B", 2100, "b", parent="A", name="B")]  # B -> A/B (later)
    merged = converge(common, site_a, site_b)
    # A has the oldest name register in the cycle: it goes to the top level.
    assert path_of(merged, "A") == ("A",)
    assert path_of(merged, "B") == ("A", "B")


def test_hierarchy_deleting_a_parent_with_live_children_keeps_the_children() -> None:
    note = msg("Project", "n1")
    common = [inbox("a"), create("Work", 1000), create("Project", 1001, parent="Work"),
              add(note, 1100)]
    merged = converge(common, [delete("Work", 2000, "a")])
    resolved = merged.resolve(USER)
    assert not resolved[guid("Work")].exists
    assert resolved[guid("Project")].exists
    assert resolved[guid("Project")].path == ("Work", "Project")
    assert sorted(tree(merged)) == [INBOX_PATH, ("Work", "Project")]


def test_hierarchy_inbox_always_exists_and_a_rename_never_takes_it() -> None:
    common = [inbox("a"), create("Junk", 1000)]
    merged = converge(common, [delete("INBOX", 2000, "a")],
                      [rename("Junk", 2100, "b", name="inbox")])
    resolved = merged.resolve(USER)
    assert resolved[guid("INBOX")].exists
    assert resolved[guid("INBOX")].path == INBOX_PATH
    assert resolved[guid("Junk")].path == (f"INBOX-{guid('Junk')[:8]}",)


def test_hierarchy_mail_for_a_mailbox_whose_create_is_missing_is_shown() -> None:
    lost = msg("Nowhere", "m")
    merged = converge([inbox("a"), add(lost, 1000, "b")])
    resolved = merged.resolve(USER)[guid("Nowhere")]
    assert resolved.exists
    assert resolved.path == (f"unnamed-{guid('Nowhere')[:8]}",)
    assert resolved.has_folder
