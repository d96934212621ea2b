"""Restores on in-memory and Maildir stores, without Dovecot: identity, selection, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundlesync.archive.model import ArchivedMailbox, ArchivedMessage
from bundlesync.archive.restore import restore_beside, restore_into
from bundlesync.archive.restore_plan import (
    Selection,
    derived_key,
    parse_prefix,
    storable_flags,
)
from bundlesync.core.model import FLAGGED, SEEN
from bundlesync.errors import StoreError, UsageError
from bundlesync.stores.base import INBOX, FolderPath
from bundlesync.stores.dovecot_files import UidlistRecord, format_uidlist
from bundlesync.stores.errors import FolderNotFound
from bundlesync.stores.maildir import MaildirStore
from bundlesync.stores.memory import MemoryStore
from tests.restore.source import MemorySource, day_ms

DATE = "2026-11-05"
PROJECTS_GUID = "0123456789abcdef0123456789abcdef"


def mail(number: int) -> bytes:
    return f"Message-ID: <p{number}@example.org>\nSubject: {number}\n\nBody {number}.\n".encode()


def live_store() -> MemoryStore:
    store = MemoryStore()
    for user in ("alice@example.org", "bob@example.org"):
        store.ensure_user(user)
        store.create_folder(user, ("Projects",), guid=PROJECTS_GUID, uidvalidity=77)
        for number in range(1, 5):
            store.add_message(user, INBOX, key=f"17000000{number:02d}.M1P1.a", data=mail(number),
                              flags=frozenset({SEEN} if number % 2 else set()),
                              internal_date=1_700_000_000 + number)
        store.add_message(user, ("Projects",), key="1700000099.M1P1.a", data=mail(99),
                          flags=frozenset({FLAGGED, "Work"}), internal_date=1_700_000_099)
    return store


def folder(store: MemoryStore, user: str, path: FolderPath) -> dict[str, frozenset[str]]:
    return {m.key: m.flags for m in store.messages(user, path)}


def everything(store: MemoryStore) -> dict[tuple[str, FolderPath], dict[str, frozenset[str]]]:
    return {(user, info.path): folder(store, user, info.path)
            for user in store.users() for info in store.folders(user)}


def test_beside_finds_a_renamed_mailbox_by_its_guid() -> None:
    store = live_store()
    source = MemorySource()
    source.take(store, day_ms(DATE))
    store.rename_folder("alice@example.org", ("Projects",), ("Clients",))
    report = restore_beside(source, store, at=DATE,
                            selection=Selection(users=("alice*",), mailboxes=("Projects",)))
    assert [(m.target, m.restored, m.present) for m in report.mailboxes] == [
        (("Restored", DATE, "Projects"), 0, 1)]
    paths = {f.path for f in store.folders("alice@example.org")}
    assert ("Restored", DATE, "Projects") not in paths


def test_beside_recognises_a_message_saved_again_under_another_name_by_its_body() -> None:
    store = live_store()
    source = MemorySource()
    source.take(store, day_ms(DATE))
    user = "alice@example.org"
    store.expunge(user, INBOX, "1700000001.M1P1.a")
    store.add_message(user, INBOX, key="1800000000.M9P9.b", data=mail(1), flags=frozenset(),
                      internal_date=1_800_000_000)  # the same message, copied back by a client
    store.expunge(user, INBOX, "1700000002.M1P1.a")
    report = restore_beside(source, store, at=DATE, selection=Selection(users=(user,)))
    target = ("Restored", DATE, "INBOX")
    assert folder(store, user, target) == {"1700000002.M1P1.a": frozenset()}
    assert report.restored == 1 and store.subscriptions(user) == {target}


def test_beside_changes_nothing_live_and_a_second_run_adds_nothing() -> None:
    store = live_store()
    source = MemorySource()
    source.take(store, day_ms(DATE))
    for user in store.users():
        store.expunge(user, INBOX, "1700000003.M1P1.a")
        store.expunge(user, ("Projects",), "1700000099.M1P1.a")
    live_before = everything(store)
    first = restore_beside(source, store, at=DATE, prefix=parse_prefix("Recovered/Mail"))
    assert first.restored == 4
    after = everything(store)
    assert {k: v for k, v in after.items() if k in live_before} == live_before
    assert after[("bob@example.org", ("Recovered", "Mail", DATE, "Projects"))] == {
        "1700000099.M1P1.a": frozenset({FLAGGED, "Work"})}
    second = restore_beside(source, store, at=DATE, prefix=("Recovered", "Mail"))
    assert second.restored == 0 and second.present == first.present + first.restored
    assert everything(store) == after


def test_beside_does_not_restore_an_earlier_restore() -> None:
    store = live_store()
    user = "alice@example.org"
    store.create_folder(user, ("Restored", "2026-01-01", "INBOX"), guid=None, uidvalidity=None)
    store.add_message(user, ("Restored", "2026-01-01", "INBOX"), key="old", data=mail(50),
                      flags=frozenset(), internal_date=1)
    source = MemorySource()
    source.take(store, day_ms(DATE))
    store.expunge(user, ("Restored", "2026-01-01", "INBOX"), "old")
    report = restore_beside(source, store, at=DATE, selection=Selection(users=(user,)))
    assert all(m.source[0] != "Restored" for m in report.mailboxes)
    assert report.restored == 0


def test_a_dry_run_reports_in_mail_terms_and_writes_nothing() -> None:
    store = live_store()
    source = MemorySource()
    source.take(store, day_ms(DATE))
    store.expunge("bob@example.org", INBOX, "1700000004.M1P1.a")
    before = everything(store)
    report = restore_beside(source, store, at=DATE, dry_run=True)
    assert everything(store) == before
    assert report.restored == 1 and report.present == 9
    assert f"bob@example.org  INBOX -> Restored/{DATE}/INBOX: would restore 1 message " in (
        "\n".join(report.lines()))
    assert report.to_json()["dry_run"] is True


def test_a_user_mask_that_matches_nobody_is_refused() -> None:
    store = live_store()
    source = MemorySource()
    source.take(store, day_ms(DATE))
    with pytest.raises(UsageError, match="carol"):
        restore_beside(source, store, at=DATE, selection=Selection(users=("carol*",)))


@pytest.mark.parametrize("prefix", ["", "Restored/Ar.chive", "inbox"])
def test_a_prefix_no_store_can_hold_is_refused(prefix: str) -> None:
    with pytest.raises(UsageError):
        parse_prefix(prefix)


def test_into_refuses_a_store_holding_other_mail_and_changes_nothing() -> None:
    source = MemorySource()
    source.take(live_store(), day_ms(DATE))
    target = MemoryStore()
    target.ensure_user("bob@example.org")
    target.add_message("bob@example.org", INBOX, key="mine", data=b"Subject: x\n\nx\n",
                       flags=frozenset(), internal_date=1)
    before = everything(target)
    with pytest.raises(UsageError, match="not empty"):
        restore_into(source, target, at=DATE)
    assert everything(target) == before
    assert target.users() == ["bob@example.org"]  # alice was not created either


def test_into_with_a_selection_restores_only_that() -> None:
    source = MemorySource()
    source.take(live_store(), day_ms(DATE))
    target = MemoryStore()
    report = restore_into(source, target, at=DATE,
                          selection=Selection(users=("bob@example.org",), mailboxes=("Projects",)))
    assert report.restored == 1
    assert everything(target) == {
        ("bob@example.org", INBOX): {},
        ("bob@example.org", ("Projects",)): {"1700000099.M1P1.a": frozenset({FLAGGED, "Work"})}}
    [projects] = [f for f in target.folders("bob@example.org") if f.path == ("Projects",)]
    assert (projects.guid, projects.uidvalidity) == (PROJECTS_GUID, 77)


def test_into_names_a_message_whose_guid_is_no_file_name_and_records_the_guid(
    tmp_path: Path,
) -> None:
    odd = ArchivedMessage(guid="odd/guid:2,S", body="", size=0, flags=frozenset({SEEN}),
                          uid=5, internal_date=1_700_000_000)
    source = MemorySource()
    data = b"Subject: odd\n\nodd\n"
    odd = ArchivedMessage(guid=odd.guid, body=source.add_body(data), size=len(data),
                          flags=odd.flags, uid=5, internal_date=odd.internal_date)
    source.add_snapshot(day_ms(DATE), {"": [ArchivedMailbox(
        guid=PROJECTS_GUID, path=INBOX, uidvalidity=1234, uidnext=9, subscribed=True,
        messages=(odd,))]})
    store = MaildirStore(str(tmp_path / "Maildir"))
    restore_into(source, store, at=DATE)
    key = derived_key(odd)
    assert folder_keys(store) == [key]
    uidlist = (tmp_path / "Maildir" / "dovecot-uidlist").read_text()
    assert uidlist == f"3 V1234 N9 G{PROJECTS_GUID}\n5 Godd/guid:2,S :{key}\n"


def folder_keys(store: MaildirStore) -> list[str]:
    return [m.key for m in store.messages("", INBOX)]


def test_flags_no_maildir_can_hold_are_left_out() -> None:
    assert storable_flags({"\\Seen", "\\Recent", "\\Bogus", "Work", "bad word", "$Label1"}) == {
        "\\Seen", "Work", "$Label1"}


def test_a_guid_a_uidlist_record_cannot_hold_is_left_out_of_it() -> None:
    text = format_uidlist(uidvalidity=1, next_uid=1, guid=None, records=[
        UidlistRecord(uid=2, key="b", guid="has space"), UidlistRecord(uid=1, key="a", guid="g")])
    assert text == "3 V1 N3\n1 Gg :a\n2 :b\n"


def test_user_masks_mean_what_they_mean_to_backup() -> None:
    selection = Selection(users=("a?ice@*", "[b]ob@example.org"))
    assert selection.takes_user("alice@example.org")
    assert not selection.takes_user("bob@example.org")  # brackets are no pattern there
    assert Selection(users=("[b]ob@example.org",)).takes_user("[b]ob@example.org")


def test_into_a_maildir_overwrites_what_a_killed_run_left_in_tmp(tmp_path: Path) -> None:
    # A run killed mid-batch leaves tmp/<key> half-written and nothing in cur/; the next
    # run writes the whole message under that name and names it with its flags.
    source = MemorySource()
    data = mail(7)
    message = ArchivedMessage(guid="1700000007.M7P1.a", body=source.add_body(data),
                              size=len(data), flags=frozenset({SEEN, "Work"}), uid=3,
                              internal_date=1_700_000_007)
    source.add_snapshot(day_ms(DATE), {"": [ArchivedMailbox(
        guid=PROJECTS_GUID, path=INBOX, uidvalidity=1234, uidnext=4, subscribed=True,
        messages=(message,))]})
    maildir = tmp_path / "Maildir"
    (maildir / "tmp").mkdir(parents=True)
    (maildir / "tmp" / message.guid).write_bytes(data[:5])
    store = MaildirStore(str(maildir))
    restore_into(source, store, at=DATE)
    assert not list((maildir / "tmp").iterdir())
    (named,) = (maildir / "cur").iterdir()
    assert named.name == f"{message.guid}:2,Sa"
    assert named.read_bytes() == data
    assert named.stat().st_mtime == 1_700_000_007
    assert (maildir / "dovecot-keywords").read_text() == "0 Work\n"
    assert {m.key: m.flags for m in store.messages("", INBOX)} == {
        message.guid: frozenset({SEEN, "Work"})}


def test_file_name_parts_checks_the_folder_and_registers_keywords(tmp_path: Path) -> None:
    # The one entry point an exact restore uses to write into a Maildir by itself.
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    store.create_folder("", ("Work",), guid=PROJECTS_GUID, uidvalidity=77)
    directory, letters = store.file_name_parts("", ("Work",), {FLAGGED, SEEN, "Todo"})
    assert directory == str(tmp_path / "Maildir" / ".Work")
    assert letters == "FSa"
    assert (tmp_path / "Maildir" / ".Work" / "dovecot-keywords").read_text() == "0 Todo\n"
    assert store.file_name_parts("", ("Work",))[1] == ""
    with pytest.raises(FolderNotFound):
        store.file_name_parts("", ("Missing",))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "Maildir" / ".Work" / "cur").rmdir()
    (tmp_path / "Maildir" / ".Work" / "cur").symlink_to(outside)
    with pytest.raises(StoreError):
        store.file_name_parts("", ("Work",))
