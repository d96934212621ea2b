"""Store-side cases of the routine: seeding from a copy, renames and moves on disk,
filters, several users, a restored site."""

from __future__ import annotations

from bundlesync.operations.demo import USERS
from tests.operations.conftest import Sites

ALICE, BOB = USERS


def test_sites_seeded_from_a_copy_add_nothing_on_first_exchange(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=3)
    sites.add_copy_of("bravo", "alpha")
    sites.befriend("alpha", "bravo")
    before_a, before_b = sites.digest("alpha"), sites.digest("bravo")
    assert before_a == before_b
    sites.export("alpha")
    sites.export("bravo")
    result_b = sites.import_("bravo")
    result_a = sites.import_("alpha")
    assert result_a.report.empty, result_a.report.lines()
    assert result_b.report.empty, result_b.report.lines()
    assert result_a.report.conflicts == result_b.report.conflicts == 0
    assert sites.digest("alpha") == before_a
    assert sites.digest("bravo") == before_b


def test_folder_renamed_on_disk_travels_as_a_rename_without_bodies(sites: Sites) -> None:
    alpha = sites.add("alpha", populate_per_folder=3)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    alpha.rename_folder(ALICE, ("Archive",), ("Old Mail",))
    result = sites.export("alpha")
    assert result.scan.mailboxes_renamed == 1
    assert result.scan.added == 0
    assert result.bundles[0].bodies == 0
    sites.import_("bravo")
    assert sites.digest("bravo") == sites.digest("alpha")
    paths = {f.path for f in sites.stores["bravo"].folders(ALICE)}
    assert ("Old Mail", "2024") in paths  # the child moved with its parent
    assert ("Archive",) not in paths


def test_move_between_folders_sends_no_body(sites: Sites) -> None:
    alpha = sites.add("alpha", populate_per_folder=2)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    message = alpha.messages(ALICE, ("INBOX",))[0]
    data = alpha.read_body(ALICE, ("INBOX",), message.key)
    alpha.add_message(ALICE, ("Sent",), key=message.key, data=data, flags=message.flags,
                      internal_date=message.internal_date)
    alpha.expunge(ALICE, ("INBOX",), message.key)
    result = sites.export("alpha")
    assert result.scan.added == 1
    assert result.scan.expunged == 1
    assert result.scan.bytes_hashed == 0  # recognised as a move: the body was not read
    assert result.bundles[0].bodies == 0  # and not sent: bravo holds it
    sites.import_("bravo")
    assert sites.digest("bravo") == sites.digest("alpha")


def test_excluded_mailboxes_stay_home(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=2, exclude=("Archive",))
    sites.add("bravo", exclude=("Sent",))
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    paths = {f.path for f in sites.stores["bravo"].folders(ALICE)}
    assert ("INBOX",) in paths
    assert ("Archive",) not in paths  # never recorded at alpha
    assert ("Archive", "2024") not in paths
    assert ("Sent",) not in paths  # recorded at alpha, not applied at bravo


def test_users_appear_at_the_other_site_from_the_template(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=1)
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    assert bravo.users() == []
    sites.export("alpha")
    sites.import_("bravo")
    assert bravo.users() == sorted(USERS)
    maildir = sites.root / "bravo" / "mail" / "example.org" / "bob" / "Maildir"
    assert (maildir / "cur").is_dir()


def test_a_body_expunged_here_while_the_peer_moved_it_is_asked_for(sites: Sites) -> None:
    """bravo expunges a message while alpha files it into another folder. alpha does
    not send the body (bravo had it); bravo asks for it, and gets it next time."""
    alpha = sites.add("alpha", populate_per_folder=2)
    bravo = sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    inbox = ("INBOX",)
    message = alpha.messages(ALICE, inbox)[0]
    data = alpha.read_body(ALICE, inbox, message.key)
    alpha.add_message(ALICE, ("Archive",), key=message.key, data=data, flags=message.flags,
                      internal_date=message.internal_date)
    alpha.expunge(ALICE, inbox, message.key)
    bravo.expunge(ALICE, inbox, message.key)
    assert sites.export("alpha").bundles[0].bodies == 0
    first = sites.import_("bravo")
    assert first.report.missing  # bravo lacks it, and says so
    asking = sites.export("bravo")
    assert asking.bundles
    sites.import_("alpha")
    answer = sites.export("alpha")
    assert answer.bundles[0].bodies == 1
    sites.import_("bravo")
    assert message.key in {m.key for m in bravo.messages(ALICE, ("Archive",))}
    sites.export("bravo")
    sites.import_("alpha")
    assert sites.digest("alpha") == sites.digest("bravo")


def test_move_of_a_post_other_users_also_hold_finds_its_body_here(sites: Sites) -> None:
    """A mailing-list post lies byte for byte in several users' folders; one user
    files it into another folder. No body travels, and the receiving site builds the
    moved message from a copy it holds -- whichever user's."""
    alpha = sites.add("alpha")
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    post = b"From: list@example.org\nSubject: weekly digest\n\nSame bytes for everyone.\n"
    for user in (ALICE, BOB):
        alpha.ensure_user(user)
        alpha.create_folder(user, ("Sent",), guid=None, uidvalidity=None)
        alpha.add_message(user, ("INBOX",), key="1700000000.M1P1.list", data=post,
                          flags=frozenset(), internal_date=1_700_000_000)
    sites.export("alpha")
    sites.import_("bravo")
    sites.export("bravo")
    sites.import_("alpha")
    alpha.add_message(BOB, ("Sent",), key="1700000000.M1P1.list", data=post,
                      flags=frozenset(), internal_date=1_700_000_000)
    alpha.expunge(BOB, ("INBOX",), "1700000000.M1P1.list")
    assert sites.export("alpha").bundles[0].bodies == 0
    result = sites.import_("bravo")
    assert not result.report.missing
    assert sites.digest("bravo") == sites.digest("alpha")
