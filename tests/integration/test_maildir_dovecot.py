"""Real Dovecot as the oracle for MaildirStore, both ways.

What MaildirStore writes, ``doveadm fetch`` and an IMAP client see exactly: the
messages, flags, keywords, received dates, folder names (non-ASCII, nested),
GUIDs, UIDVALIDITY and subscriptions. And what Dovecot writes (save, flags,
mailbox create/rename, subscribe, copies with GUIDs kept in dovecot-uidlist),
MaildirStore reads exactly as Dovecot reports it.
"""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.core.model import ANSWERED, DELETED, DRAFT, FLAGGED, PASSED, SEEN
from bundlesync.stores import mutf7
from bundlesync.stores.base import INBOX, FolderPath
from bundlesync.stores.errors import UnsafeName
from bundlesync.stores.maildir import MaildirStore
from tests.dovecot import Dovecot, mailbox_name

pytestmark = pytest.mark.dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot.session() as session:
        yield session


GUID = "0123456789abcdef0123456789abcdef"
ARCHIVE_ZURICH: FolderPath = ("Archive", "Zürich")
JAPANESE: FolderPath = ("日本語",)
SENT: FolderPath = ("Sent",)


def message(number: int) -> bytes:
    return (
        f"From: sender{number}@example.org\nTo: alice@example.org\n"
        f"Message-ID: <m{number}@example.org>\nSubject: message {number}\n\n"
        f"Body of message {number}.\n"
    ).encode()


# What each message gets: folder, key, flags (as stored), internal date.
PLAN: list[tuple[FolderPath, str, frozenset[str], int]] = [
    (INBOX, "1700000001.M1P1.site-a", frozenset({SEEN}), 1_700_000_001),
    (INBOX, "1700000002.M2P1.site-a", frozenset({SEEN, FLAGGED, "$Label1", "Work"}),
     1_700_000_002),
    (INBOX, f"1700000003.M3P1.site-a,S={len(message(3))}",
     frozenset({ANSWERED, DELETED, DRAFT}), 1_600_000_003),
    (INBOX, "plain-key", frozenset(), 1_500_000_004),
    (ARCHIVE_ZURICH, "1700000005.M5P1.site-a", frozenset({"Work", "Projekt"}), 1_700_000_005),
    (ARCHIVE_ZURICH, "1700000006.M6P1.site-a", frozenset({PASSED, SEEN}), 1_700_000_006),
    (JAPANESE, "1700000007.M7P1.site-a", frozenset({FLAGGED}), 1_700_000_007),
]


def imap_flags(flags: frozenset[str]) -> frozenset[str]:
    """What Dovecot shows of stored flags: \\Passed lives only in the file name."""
    return flags - {PASSED}


def write_with_bundlesync(maildir: Path) -> MaildirStore:
    store = MaildirStore(str(maildir))
    store.ensure_user("")
    store.create_folder("", ARCHIVE_ZURICH, guid=GUID, uidvalidity=4242)
    store.create_folder("", JAPANESE, guid=None, uidvalidity=None)
    store.create_folder("", SENT, guid=None, uidvalidity=None)
    for number, (path, key, flags, date) in enumerate(PLAN, start=1):
        stored = store.add_message("", path, key=key, data=message(number), flags=flags,
                                   internal_date=date)
        assert stored.flags == flags
    store.add_message("", INBOX, key="expunged", data=message(99), flags=frozenset(),
                      internal_date=0)
    store.expunge("", INBOX, "expunged")
    store.set_subscriptions("", [INBOX, ARCHIVE_ZURICH, JAPANESE])
    return store


def test_doveadm_sees_exactly_what_maildirstore_wrote(dovecot: Dovecot) -> None:
    maildir = dovecot.path("alice", "Maildir")
    write_with_bundlesync(maildir)
    # No chown here: the store gave its files to vmail (the owner above the Maildir).
    assert dovecot.dump(maildir, chown=False) == sorted(
        (mailbox_name(path), key, imap_flags(flags)) for path, key, flags, _ in PLAN
    )
    assert dovecot.mailboxes(maildir) == sorted(
        ["INBOX", "Archive", "Archive.Zürich", "日本語", "Sent"]
    )
    assert dovecot.mailboxes(maildir, subscribed=True) == sorted(
        ["INBOX", "Archive.Zürich", "日本語"]
    )
    status = dovecot.status(maildir, "Archive.Zürich")
    assert (status["guid"], status["uidvalidity"], status["messages"]) == (GUID, "4242", "2")
    sizes = dovecot.fetch(maildir, "mailbox guid size.physical")
    expected_sizes = {key: len(message(n)) for n, (_, key, _, _) in enumerate(PLAN, start=1)}
    assert {row["guid"]: int(row["size.physical"]) for row in sizes} == expected_sizes


def _fetch_folder(client: imaplib.IMAP4, name: str) -> dict[str, tuple[frozenset[str], int]]:
    """X-GUID -> (flags without \\Recent, INTERNALDATE as a Unix time) of every message."""
    typ, _ = client.select(_quote(name), readonly=True)
    assert typ == "OK", name
    typ, data = client.uid("FETCH", "1:*", "(X-GUID FLAGS INTERNALDATE)")
    assert typ == "OK"
    result = {}
    for item in data:
        if not isinstance(item, bytes):
            continue
        line = item.decode()
        guid = re.search(r"X-GUID (\S+)", line)
        flags = re.search(r"FLAGS \(([^)]*)\)", line)
        date = imaplib.Internaldate2tuple(item)
        assert guid is not None
        assert flags is not None
        assert date is not None
        result[guid.group(1)] = (
            frozenset(flag for flag in flags.group(1).split() if flag != "\\Recent"),
            int(time.mktime(date)),  # Internaldate2tuple gives local time
        )
    return result


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utf7(path: FolderPath) -> str:
    return ".".join(mutf7.encode(component) for component in path)


def test_imap_sees_exactly_what_maildirstore_wrote(dovecot: Dovecot) -> None:
    maildir = dovecot.path("alice", "Maildir")
    store = write_with_bundlesync(maildir)
    with dovecot.imap_server({"alice": maildir}) as (host, port):
        client = imaplib.IMAP4(host, port)
        try:
            client.login("alice", Dovecot.PASSWORD)
            typ, listed = client.list()
            assert typ == "OK"
            names = {item.decode().rsplit(' "." ', 1)[1].strip('"') for item in listed
                     if isinstance(item, bytes)}
            assert names == {"INBOX", "Archive", _utf7(ARCHIVE_ZURICH), _utf7(JAPANESE),
                             _utf7(SENT)}
            typ, subscribed = client.lsub()
            assert typ == "OK"
            assert {item.decode().rsplit(' "." ', 1)[1].strip('"') for item in subscribed
                    if isinstance(item, bytes)} == {"INBOX", _utf7(ARCHIVE_ZURICH),
                                                     _utf7(JAPANESE)}
            for path in (INBOX, ARCHIVE_ZURICH, JAPANESE):
                seen = _fetch_folder(client, _utf7(path))
                expected = {key: (imap_flags(flags), date)
                            for where, key, flags, date in PLAN if where == path}
                assert seen == expected, path
            # A keyword added while a session has the folder open reaches it by
            # name, not as "unknown-N".
            client.select("INBOX")
            store.set_flags("", INBOX, "plain-key", frozenset({"Late"}))
            client.noop()
            assert _fetch_folder(client, "INBOX")["plain-key"][0] == {"Late"}
        finally:
            client.logout()


def test_maildirstore_reads_what_dovecot_wrote(dovecot: Dovecot) -> None:
    maildir = dovecot.path("bob", "Maildir")
    dovecot.create_mailbox(maildir, "Work", "Work.Projekte", "Zürich")
    bodies = {}
    for number in range(1, 5):
        dovecot.save(maildir, "INBOX", message(number))
    dovecot.save(maildir, "Work.Projekte", message(5))
    dovecot.save(maildir, "Zürich", message(6))
    dovecot.flags_add(maildir, "INBOX", "\\Seen $Label1 Work", "uid", "1")
    dovecot.flags_add(maildir, "INBOX", "\\Flagged", "uid", "2")  # stays in new/
    dovecot.flags_add(maildir, "Zürich", "\\Answered \\Deleted Projekt")
    dovecot.expunge(maildir, "INBOX", "uid", "3")
    dovecot.rename_mailbox(maildir, "Work", "Arbeit")
    dovecot.subscribe(maildir, "INBOX", "Zürich", "Arbeit.Projekte")
    assert any((maildir / "new").iterdir()), "Dovecot left a flagged file in new/"
    for row in dovecot.fetch(maildir, "guid body"):
        bodies[row["guid"]] = row["body"]

    oracle = dovecot.dump(maildir)
    store = MaildirStore(str(maildir))
    read = sorted(
        (mailbox_name(info.path), m.guid, m.flags)
        for info in store.folders("")
        for m in store.messages("", info.path)
    )
    assert read == oracle
    assert {info.path for info in store.folders("")} == {
        INBOX, ("Arbeit",), ("Arbeit", "Projekte"), ("Zürich",)
    }
    for info in store.folders(""):
        status = dovecot.status(maildir, mailbox_name(info.path))
        assert (info.guid, str(info.uidvalidity)) == (status["guid"], status["uidvalidity"])
    assert {mailbox_name(path) for path in store.subscriptions("")} == set(
        dovecot.mailboxes(maildir, subscribed=True)
    )
    for m in store.messages("", INBOX):
        assert bodies[m.guid].encode() in store.read_body("", INBOX, m.key)


def test_guids_dovecot_keeps_in_the_uidlist_are_read(dovecot: Dovecot) -> None:
    source = dovecot.path("carol", "sdbox")
    for number in range(1, 4):
        dovecot.save(source, "INBOX", message(number), location=f"sdbox:{source}")
    source_guids = sorted(
        row["guid"] for row in dovecot.fetch(source, "guid", location=f"sdbox:{source}")
    )
    copy = dovecot.path("carol", "Maildir")
    # From another format dsync writes new Maildir file names and keeps each
    # message's GUID with a G extension in dovecot-uidlist.
    dovecot.doveadm(source, "backup", f"maildir:{copy}", location=f"sdbox:{source}")
    copied = MaildirStore(str(copy)).messages("", INBOX)
    assert sorted(m.guid for m in copied) == source_guids
    assert all(m.key != m.guid for m in copied)
    assert dovecot.dump(copy) == [("INBOX", guid, frozenset()) for guid in source_guids]


def test_a_key_from_a_bundle_must_not_misstate_the_size(dovecot: Dovecot) -> None:
    maildir = dovecot.path("erin", "Maildir")
    store = MaildirStore(str(maildir))
    store.ensure_user("")
    data = message(1)
    virtual = len(data) + data.count(b"\n")  # every LF counts as CRLF
    key = f"1700000001.M1P1.site-a,S={len(data)},W={virtual}"
    store.add_message("", INBOX, key=key, data=data, flags=frozenset(), internal_date=0)
    [row] = dovecot.fetch(maildir, "guid size.physical size.virtual")
    assert row == {"guid": key, "size.physical": str(len(data)), "size.virtual": str(virtual)}
    for wrong in (f"k,S={len(data) + 1}", f"k,S={len(data)},W={virtual - 1}"):
        with pytest.raises(UnsafeName):
            store.add_message("", INBOX, key=wrong, data=data, flags=frozenset(),
                              internal_date=0)
    assert len(dovecot.dump(maildir)) == 1


def test_keywords_from_both_sides_share_one_keywords_file(dovecot: Dovecot) -> None:
    maildir = dovecot.path("dave", "Maildir")
    dovecot.save(maildir, "INBOX", message(1))
    dovecot.save(maildir, "INBOX", message(2))
    dovecot.flags_add(maildir, "INBOX", "$Label1", "uid", "1")
    by_uid = {row["uid"]: row["guid"] for row in dovecot.fetch(maildir, "uid guid")}
    first, second = by_uid["1"], by_uid["2"]
    store = MaildirStore(str(maildir))
    store.set_flags("", INBOX, second, frozenset({"Work", "$label1"}))  # case as Dovecot
    dovecot.flags_add(maildir, "INBOX", "Later", "uid", "1")
    expected = {first: {"$Label1", "Later"}, second: {"Work", "$Label1"}}
    assert {guid: flags for _, guid, flags in dovecot.dump(maildir)} == expected
    assert {m.guid: m.flags for m in store.messages("", INBOX)} == expected
    assert (maildir / "dovecot-keywords").read_text().splitlines() == [
        "0 $Label1", "1 Work", "2 Later"
    ]


def test_users_of_a_template_store_log_in_and_see_only_their_mail(dovecot: Dovecot) -> None:
    root = dovecot.directory("vmail")
    store = MaildirStore(f"{root}/%d/%n/Maildir")
    users = ["alice@example.org", "bob@example.net"]
    for number, user in enumerate(users, start=1):
        store.ensure_user(user)
        store.add_message(user, INBOX, key=f"key-{number}", data=message(number),
                          flags=frozenset({SEEN, "Work"}), internal_date=1_700_000_000)
    assert store.users() == users
    maildirs = {user: Path(store.maildir_path(user)) for user in users}
    # Served without a chown: the store gave what it created to vmail already.
    with dovecot.imap_server(maildirs, chown=False) as (host, port):
        for number, user in enumerate(users, start=1):
            client = imaplib.IMAP4(host, port)
            try:
                client.login(user, Dovecot.PASSWORD)
                assert _fetch_folder(client, "INBOX") == {
                    f"key-{number}": (frozenset({SEEN, "Work"}), 1_700_000_000)
                }
            finally:
                client.logout()
