"""The Backups view served by a real Dovecot: an IMAP client sees each snapshot date
read-only, with the UIDs it had at backup time, and cannot change anything there."""

from __future__ import annotations

import imaplib
import os
import re
from collections.abc import Iterator

import pytest

from bundlesync.archive.view import dovecot_config, refresh_view
from bundlesync.core.model import FLAGGED, SEEN
from bundlesync.stores.base import INBOX
from bundlesync.stores.memory import MemoryStore
from tests.dovecot import Dovecot
from tests.restore.source import MemorySource, day_ms

pytestmark = pytest.mark.dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot.session() as session:
        yield session


def mail(number: int) -> bytes:
    return (f"From: a@example.org\nMessage-ID: <v{number}@example.org>\n"
            f"Subject: view {number}\n\nBody of {number}.\n").encode()


def source_with_two_dates() -> MemorySource:
    store = MemoryStore()
    store.ensure_user("alice")
    store.create_folder("alice", ("Archive", "Zürich"), guid=None, uidvalidity=None)
    store.add_message("alice", INBOX, key="1700000001.M1P1.a", data=mail(1),
                      flags=frozenset({SEEN, "Work"}), internal_date=1_700_000_001)
    store.add_message("alice", ("Archive", "Zürich"), key="1700000002.M2P1.a", data=mail(2),
                      flags=frozenset(), internal_date=1_700_000_002)
    source = MemorySource()
    uids = {("alice", INBOX, "1700000001.M1P1.a"): 41,
            ("alice", ("Archive", "Zürich"), "1700000002.M2P1.a"): 7}
    boxes = {("alice", INBOX): (1111, 42), ("alice", ("Archive", "Zürich")): (2222, 8)}
    source.take(store, day_ms("2026-11-01"), uids=uids, mailbox_uids=boxes)
    store.add_message("alice", INBOX, key="1700000003.M3P1.a", data=mail(3),
                      flags=frozenset({FLAGGED}), internal_date=1_700_000_003)
    uids[("alice", INBOX, "1700000003.M3P1.a")] = 42
    boxes[("alice", INBOX)] = (1111, 43)
    source.take(store, day_ms("2026-11-02"), uids=uids, mailbox_uids=boxes)
    return source


def test_an_imap_client_reads_the_backups_namespace_and_cannot_change_it(
    dovecot: Dovecot,
) -> None:
    view = dovecot.path("view")
    view.mkdir(mode=0o750)
    os.chown(view, 0, dovecot.gid)  # the view's group is Dovecot's mail_gid
    report = refresh_view(source_with_two_dates(), str(view))
    assert report.added == (("alice", "2026-11-01"), ("alice", "2026-11-02"))
    snapshot_files = sorted(str(p.relative_to(view)) for p in view.rglob("*"))

    live = dovecot.path("live", "Maildir")
    dovecot.save(live, "INBOX", mail(9))
    # The server's own inbox namespace, as every Dovecot configuration has one.
    config = "namespace inbox {\n  inbox = yes\n  prefix =\n  separator = .\n}\n"
    config += dovecot_config(str(view))
    with dovecot.imap_server({"alice": live}, extra_config=config) as (host, port):
        client = imaplib.IMAP4(host, port)
        client.login("alice", Dovecot.PASSWORD)
        _, listing = client.list("Backups.*")
        names = sorted(line.decode().rsplit('"." ', 1)[1] for line in listing
                       if isinstance(line, bytes))
        assert "Backups.2026-11-01.INBOX" in names
        assert "Backups.2026-11-02.INBOX" in names
        assert "Backups.2026-11-02.Archive.Z&APw-rich" in names

        # SELECT succeeds but Dovecot announces the mailbox read-only.
        with pytest.raises(client.readonly):
            client.select("Backups.2026-11-02.INBOX")
        client.is_readonly = True  # let imaplib send what a careless client would
        assert client.untagged_responses.get("UIDVALIDITY", [b""])[-1] == b"1111"
        _, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        fetched = [item for item in data if isinstance(item, tuple)]
        assert [re.search(rb"UID (\d+)", head).group(1) for head, _ in fetched] == [b"41", b"42"]
        assert fetched[0][1] == mail(1).replace(b"\n", b"\r\n")
        assert b"Work" in fetched[0][0] and b"\\Seen" in fetched[0][0]
        _, rights = client.myrights("Backups.2026-11-02.INBOX")
        assert rights[0].endswith(b" lr")

        # Every change is refused. APPEND and COPY get NO [NOPERM]. STORE and EXPUNGE on a
        # SELECTed mailbox are answered OK and change nothing: Dovecot 2.3 has no way to
        # answer NO there (RFC 4314 section 4 has the server ignore flags the user has no
        # right to; imap_expunge() returns early on a read-only mailbox; see
        # docs/restore.md). Pinned here so that a Dovecot that starts refusing is noticed.
        typ, answer = client.append("Backups.2026-11-02.INBOX", None, None,
                                    b"Subject: x\r\n\r\nx\r\n")
        assert typ == "NO" and b"NOPERM" in answer[0]
        typ, _ = client.uid("STORE", "41", "+FLAGS", "(\\Deleted \\Flagged)")
        assert typ == "OK"
        typ, _ = client.expunge()
        assert typ == "OK"
        _, after = client.uid("FETCH", "1:*", "(UID FLAGS)")
        assert [item for item in after if isinstance(item, bytes)] == [
            b"1 (UID 41 FLAGS (\\Seen Work))", b"2 (UID 42 FLAGS (\\Flagged))"]
        typ, answer = client.uid("COPY", "42", "Backups.2026-11-01.INBOX")
        assert typ == "NO" and b"NOPERM" in answer[0]
        # A conditional STORE (RFC 7162) is refused outright: the view's in-memory index
        # has no permanent modseqs, so Dovecot answers BAD.
        typ, _ = client.select("Backups.2026-11-02.INBOX", readonly=True)  # EXAMINE
        assert typ == "OK"
        with pytest.raises(client.error, match="UNCHANGEDSINCE"):
            client.uid("STORE", "41", "(UNCHANGEDSINCE 1000000)", "+FLAGS", "(\\Deleted)")
        _, after = client.uid("FETCH", "41", "(UID FLAGS)")
        assert [item for item in after if isinstance(item, bytes)] == [
            b"1 (UID 41 FLAGS (\\Seen Work))"]
        # The user's own INBOX is as writable as ever.
        client.select("INBOX")
        typ, _ = client.store("1", "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
        client.logout()
    # Nothing in the view was added, renamed or removed.
    assert sorted(str(p.relative_to(view)) for p in view.rglob("*")) == snapshot_files
