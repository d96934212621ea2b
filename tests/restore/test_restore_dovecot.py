"""Restores checked by real Dovecot: what doveadm and IMAP see after them.

* ``--into``: ``doveadm fetch 'mailbox guid uid flags'`` and each mailbox's GUID,
  UIDVALIDITY and UIDNEXT of the restored store equal the store at backup time.
* ``--beside``: after mail was expunged and new mail arrived, only the expunged
  mail comes back, under ``Restored/<date>/...``; the live mailbox is untouched;
  a second run adds nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.archive.restore import restore_beside, restore_into
from bundlesync.archive.restore_plan import Selection
from bundlesync.stores.maildir import MaildirStore
from tests.dovecot import Dovecot
from tests.restore.live import MAILBOXES, build_live, fetch_state, mail, mailbox_state
from tests.restore.source import MemorySource, day_ms

pytestmark = pytest.mark.dovecot

DATE = "2026-11-02"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot.session() as session:
        yield session


def snapshot_of(dovecot: Dovecot, maildir: Path, source: MemorySource, date: str) -> str:
    """Snapshot the live store with the UIDs and UIDVALIDITY Dovecot reports."""
    uids = {("", tuple(row["mailbox"].split(".")), row["guid"]): int(row["uid"])
            for row in dovecot.fetch(maildir, "mailbox guid uid")}
    boxes = {}
    for name in MAILBOXES:
        _, validity, uidnext = mailbox_state(dovecot, maildir, name)
        boxes[("", tuple(name.split(".")))] = (int(validity), int(uidnext))
    info = source.take(MaildirStore(str(maildir)), day_ms(date), uids=uids, mailbox_uids=boxes)
    return info.id


def test_restore_into_an_empty_store_keeps_guids_uids_and_uidvalidity(dovecot: Dovecot) -> None:
    live = dovecot.path("live", "Maildir")
    build_live(dovecot, live)
    source = MemorySource()
    snapshot_of(dovecot, live, source, DATE)
    before = fetch_state(dovecot, live)
    before_boxes = {name: mailbox_state(dovecot, live, name) for name in MAILBOXES}
    subscribed = dovecot.mailboxes(live, subscribed=True)

    target = dovecot.path("restored", "Maildir")
    report = restore_into(source, MaildirStore(str(target)), at=DATE)

    assert report.restored == len(before) == 9
    assert fetch_state(dovecot, target) == before
    assert {name: mailbox_state(dovecot, target, name) for name in MAILBOXES} == before_boxes
    assert dovecot.mailboxes(target, subscribed=True) == subscribed
    # A restore run again on its own result writes nothing and changes nothing.
    again = restore_into(source, MaildirStore(str(target)), at=DATE)
    assert (again.restored, again.present) == (0, 9)
    assert fetch_state(dovecot, target) == before
    # New mail gets a UID above every restored one, as it would have on the old server.
    dovecot.save(target, "INBOX", mail(99))
    inbox_uids = [int(uid) for box, uid, _, _ in fetch_state(dovecot, target) if box == "INBOX"]
    assert max(inbox_uids) == int(before_boxes["INBOX"][2])


def test_restore_beside_brings_back_only_what_was_lost(dovecot: Dovecot) -> None:
    live = dovecot.path("live", "Maildir")
    build_live(dovecot, live)
    source = MemorySource()
    snapshot_of(dovecot, live, source, DATE)
    # After the backup: two messages expunged, one flag changed, new mail delivered.
    deleted = {row["guid"] for row in dovecot.fetch(live, "guid", "mailbox", "INBOX", "uid", "2:3")}
    dovecot.expunge(live, "INBOX", "uid", "2:3")
    dovecot.flags_add(live, "INBOX", "\\Seen", "uid", "1")
    dovecot.save(live, "INBOX", mail(50))
    live_before = fetch_state(dovecot, live)

    store = MaildirStore(str(live))
    dry = restore_beside(source, store, at=DATE, dry_run=True,
                         selection=Selection(mailboxes=("INBOX",)))
    assert [(m.source, m.target, m.restored, m.present) for m in dry.mailboxes] == [
        (("INBOX",), ("Restored", DATE, "INBOX"), 2, 3)]
    assert fetch_state(dovecot, live) == live_before  # a dry run writes nothing

    report = restore_beside(source, store, at=DATE)
    assert report.restored == 2
    after = fetch_state(dovecot, live)
    restored = [row for row in after if row[0] == f"Restored.{DATE}.INBOX"]
    assert {guid for _, _, guid, _ in restored} == deleted
    assert {flags for *_, flags in restored} == {
        frozenset({"\\Seen", "$Label1"}), frozenset({"\\Flagged", "\\Answered", "Work"})}
    # Nothing of the live mailboxes changed: same UIDs, GUIDs and flags.
    assert [row for row in after if not row[0].startswith("Restored.")] == live_before
    assert f"Restored.{DATE}.INBOX" in dovecot.mailboxes(live, subscribed=True)

    second = restore_beside(source, MaildirStore(str(live)), at=DATE)
    assert second.restored == 0
    assert fetch_state(dovecot, live) == after


def test_restore_beside_while_dovecot_delivers_and_changes_flags(dovecot: Dovecot) -> None:
    live = dovecot.path("live", "Maildir")
    dovecot.create_mailbox(live, "Work")
    for number in range(40):
        dovecot.save(live, "INBOX" if number % 2 else "Work", mail(100 + number, size=2000))
    dovecot.flags_add(live, "INBOX", "$Label1 Work", "all")  # keywords: the uidlist lock
    source = MemorySource()
    uids = {("", tuple(row["mailbox"].split(".")), row["guid"]): int(row["uid"])
            for row in dovecot.fetch(live, "mailbox guid uid")}
    source.take(MaildirStore(str(live)), day_ms(DATE), uids=uids)
    lost = {row["guid"] for row in dovecot.fetch(live, "guid")}
    dovecot.expunge(live, "INBOX", "all")
    dovecot.expunge(live, "Work", "all")

    errors: list[BaseException] = []

    def deliver() -> None:  # the LDA and a client, working while the restore runs
        try:
            for number in range(12):
                dovecot.save(live, "INBOX", mail(500 + number))
                dovecot.flags_add(live, "INBOX", "\\Seen Later", "all")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=deliver)
    worker.start()
    report = restore_beside(source, MaildirStore(str(live)), at=DATE)
    worker.join()
    assert errors == []
    assert report.restored == 40
    after = fetch_state(dovecot, live)
    restored = [guid for box, _, guid, _ in after if box.startswith("Restored.")]
    assert sorted(restored) == sorted(lost)
    inbox = [(guid, flags) for box, _, guid, flags in after if box == "INBOX"]
    assert len(inbox) == 12 and all(flags == {"\\Seen", "Later"} for _, flags in inbox)
    assert restore_beside(source, MaildirStore(str(live)), at=DATE).restored == 0


def test_restore_into_a_store_dovecot_has_opened_but_that_holds_no_mail(dovecot: Dovecot) -> None:
    live = dovecot.path("live", "Maildir")
    build_live(dovecot, live)
    source = MemorySource()
    snapshot_of(dovecot, live, source, DATE)
    before = fetch_state(dovecot, live)
    target = dovecot.path("restored", "Maildir")
    dovecot.create_mailbox(target, "Sent")  # the user logged in once: Dovecot's own files
    assert fetch_state(dovecot, target) == []
    restore_into(source, MaildirStore(str(target)), at=DATE)
    assert fetch_state(dovecot, target) == before
    assert mailbox_state(dovecot, target, "Sent") == mailbox_state(dovecot, live, "Sent")
