"""Real export/import round trips between sites on Maildir stores."""

from __future__ import annotations

import shutil
from pathlib import Path

from bundlesync.core.model import FLAGGED, SEEN
from bundlesync.operations.demo import USERS
from tests.operations.conftest import Sites

ALICE = USERS[0]


def test_first_transfer_copies_every_message_and_flag(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=4)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    exported = sites.export("alpha")
    assert len(exported.bundles) == 1
    assert exported.bundles[0].bodies > 0
    imported = sites.import_("bravo")
    assert [b.status for b in imported.bundles] == ["applied"]
    assert sites.digest("bravo") == sites.digest("alpha")
    assert imported.report.added == sum(len(v) for v in sites.digest("alpha").values())


def test_reimport_is_a_no_op(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    before = sites.digest("bravo")
    again = sites.import_("bravo")
    assert [b.status for b in again.bundles] == ["already applied"]
    assert again.report.empty
    assert sites.digest("bravo") == before


def test_duplicate_bundle_under_another_name_adds_nothing(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    first = sites.export("alpha")
    copy = sites.root / "copy"
    copy.mkdir()
    for path in first.bundles[0].paths:
        shutil.copy(path, copy)
    sites.import_("bravo")
    before = sites.digest("bravo")
    sites.import_("bravo", copy)
    assert sites.digest("bravo") == before


def test_concurrent_changes_converge_both_ways(sites: Sites) -> None:
    alpha = sites.add("alpha", populate_per_folder=3)
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    inbox = ("INBOX",)
    a_msgs = alpha.messages(ALICE, inbox)
    alpha.set_flags(ALICE, inbox, a_msgs[0].key, a_msgs[0].flags | {FLAGGED, "$Work"})
    b_msgs = bravo.messages(ALICE, inbox)
    bravo.set_flags(ALICE, inbox, b_msgs[0].key, b_msgs[0].flags | {SEEN})
    bravo.expunge(ALICE, inbox, b_msgs[1].key)
    sites.deliver("alpha", ALICE, inbox, 7001)
    sites.deliver("bravo", ALICE, ("Sent",), 7002)
    sites.export("alpha")
    sites.export("bravo")
    sites.import_("bravo")
    sites.import_("alpha")
    assert sites.digest("alpha") == sites.digest("bravo")
    flags = {m.key: m.flags for m in alpha.messages(ALICE, inbox)}
    assert {FLAGGED, "$Work", SEEN} <= flags[a_msgs[0].key]  # per-flag merge kept both
    assert b_msgs[1].key not in flags  # the expunge travelled


def test_nothing_pending_after_a_full_round_trip(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    again = sites.export("alpha")
    assert again.up_to_date == ["bravo"]
    assert again.bundles == []


def test_dry_run_reports_in_mail_terms_and_changes_nothing(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    before = sites.digest("bravo")
    dry = sites.import_("bravo", dry_run=True)
    assert dry.dry_run
    assert dry.report.added == sum(len(v) for v in sites.digest("alpha").values())
    assert any("INBOX +" in line for line in dry.report.lines())
    assert sites.digest("bravo") == before
    real = sites.import_("bravo")  # the dry run did not mark the bundle as applied
    assert [b.status for b in real.bundles] == ["applied"]
    assert real.report.added == dry.report.added


def test_tampered_bundle_is_refused_and_changes_nothing(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    bundle = sites.export("alpha").bundles[0].paths[0]
    data = bytearray(Path(bundle).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(bundle).write_bytes(bytes(data))
    before = sites.digest("bravo")
    result = sites.import_("bravo")
    assert [b.status for b in result.bundles] == ["rejected"]
    assert result.bundles[0].error
    assert sites.digest("bravo") == before


def test_bundle_for_another_site_is_left_alone(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.add("charlie")
    sites.befriend("alpha", "bravo")
    sites.befriend("alpha", "charlie")
    sites.export("alpha", to=["bravo"])
    result = sites.import_("charlie")
    assert [b.status for b in result.bundles] == ["not for this site"]
    assert sites.stores["charlie"].users() == []


def test_relay_forwards_changes_with_their_origin(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=1)
    sites.add("hq")
    sites.add("bravo")
    sites.befriend("alpha", "hq")
    sites.befriend("hq", "bravo")
    sites.export("alpha")
    sites.import_("hq")
    sites.export("hq", to=["bravo"])
    sites.import_("bravo")
    assert sites.digest("bravo") == sites.digest("alpha")


def test_dry_run_names_conflicts_in_mail_terms(sites: Sites) -> None:
    """Both sites change the same flag of one message; the later change wins
    everywhere, and the site whose change lost is told so, per mailbox."""
    alpha = sites.add("alpha", populate_per_folder=2)
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    inbox = ("INBOX",)
    unread = next(m for m in alpha.messages(ALICE, inbox) if SEEN not in m.flags)
    bravo.set_flags(ALICE, inbox, unread.key, unread.flags | {SEEN})  # read at bravo first
    sites.export("bravo")
    alpha.set_flags(ALICE, inbox, unread.key, unread.flags | {SEEN})
    sites.export("alpha")
    alpha.set_flags(ALICE, inbox, unread.key, unread.flags)  # marked unread again, later
    sites.export("alpha")
    dry = sites.import_("alpha", dry_run=True)
    assert dry.report.conflicts == 1
    assert any("conflict" in line and "INBOX" in line for line in dry.report.lines())
    sites.import_("alpha")
    sites.import_("bravo")
    assert SEEN not in {m.key: m.flags for m in bravo.messages(ALICE, inbox)}[unread.key]
    assert sites.digest("alpha") == sites.digest("bravo")


def test_a_superseded_bundle_goes_from_the_drop_with_all_its_volumes(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=4)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    first = sites.export("alpha", max_volume_size=4096, encrypt=False)
    volumes = first.bundles[0].paths
    assert len(volumes) > 1
    sites.deliver("alpha", ALICE, ("INBOX",), 9191)
    second = sites.export("alpha")
    assert sorted(second.removed) == sorted(Path(p).name for p in volumes)
    assert not any(Path(p).exists() for p in volumes)
