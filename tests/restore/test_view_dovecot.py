"""The Backups view served by a real Dovecot: an IMAP client sees each snapshot date
read-only, with the UIDs it had at backup time, and cannot change anything there."""

from __future__ import annotations

import imaplib
import os
import re
from collections.abc import Iterator
from pathlib import Path

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
    snapshot_files = _files(view, "users", "pool")
    snapshot_uids = _uidlists(view)

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
        assert client.untagged_responses["PERMANENTFLAGS"] == [b"()"]
        assert client.untagged_responses.get("UIDVALIDITY", [b""])[-1] == b"1111"
        _, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        fetched = [item for item in data if isinstance(item, tuple)]
        assert [re.search(rb"UID (\d+)", head).group(1) for head, _ in fetched] == [b"41", b"42"]
        assert fetched[0][1] == mail(1).replace(b"\n", b"\r\n")
        assert b"Work" in fetched[0][0] and b"\\Seen" in fetched[0][0]
        _, rights = client.myrights("Backups.2026-11-02.INBOX")
        assert rights[0].endswith(b" lr")

        _, rights = client.myrights("Backups.2026-11-01.INBOX")
        assert rights[0].endswith(b" lr")
        for readonly in (False, True):
            _what_the_client_is_told(client, readonly=readonly)
        # COPY out of the view, once per mode, is how a user takes a message back.
        client.select("INBOX")
        _, inbox = client.uid("FETCH", "1:*", "(UID)")
        assert len(inbox) == 3
        # The user's own INBOX is as writable as ever.
        client.select("INBOX")
        typ, _ = client.store("1", "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
        client.logout()
    # No message file or folder of the view was added, renamed, removed or rewritten,
    # and the UIDs in the control tree are the backup's.
    assert _files(view, "users", "pool") == snapshot_files
    assert _uidlists(view) == snapshot_uids
    assert snapshot_uids["alice/2026-11-02/INBOX"] == ("V1111", {"41", "42"})
    # Dovecot could lock and sync every view folder: nothing went wrong in its log.
    log = dovecot.path("imap1", "dovecot.log").read_text(errors="replace")
    assert not [line for line in log.splitlines()
                if " Error: " in line or " Panic: " in line or " Fatal: " in line], log


def _uidlists(view: Path) -> dict[str, tuple[str, set[str]]]:
    """Folder -> (UIDVALIDITY field, UIDs) of every dovecot-uidlist in the control tree."""
    result = {}
    for path in sorted((view / "control").rglob("dovecot-uidlist")):
        header, *records = path.read_text().splitlines()
        result[str(path.parent.relative_to(view / "control"))] = (
            header.split()[1], {line.split()[0] for line in records})
    return result


def _files(root: Path, *parts: str) -> dict[str, bytes | None]:
    """Every path below ``root``'s ``parts`` with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for part in parts for p in sorted((root / part).rglob("*"))}


def _answer(client: imaplib.IMAP4, *command: str) -> tuple[str, bytes]:
    """The tagged answer to a raw command (its timing suffix cut off)."""
    typ, data = client._simple_command(*command)
    text = data[-1] if data and isinstance(data[-1], bytes) else b""
    return typ, text.split(b" (0.")[0]


def _untagged_no(client: imaplib.IMAP4) -> list[bytes]:
    return list(client.untagged_responses.get("NO", []))


def _what_the_client_is_told(client: imaplib.IMAP4, *, readonly: bool) -> None:
    """Every way of changing a view mailbox, under SELECT or EXAMINE: what Dovecot
    answers, and that nothing changed. See docs/restore.md ("What an IMAP client sees")."""
    box = "Backups.2026-11-02.INBOX"
    client.state = "AUTH"
    client.untagged_responses.clear()
    typ, text = _answer(client, "EXAMINE" if readonly else "SELECT", box)
    # RFC 3501 6.3.1/6.3.2: [READ-ONLY], and no flag can be changed permanently.
    assert (typ, text) == ("OK", b"[READ-ONLY] Examine completed" if readonly
                           else b"[READ-ONLY] Select completed")
    assert client.untagged_responses["PERMANENTFLAGS"] == [b"()"]
    client.state, client.is_readonly = "SELECTED", True
    flags = [b"1 (UID 41 FLAGS (\\Seen Work))", b"2 (UID 42 FLAGS (\\Flagged))"]

    def fetched() -> list[bytes]:
        _, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
        return [item for item in data if isinstance(item, bytes)]

    # STORE: under EXAMINE Dovecot says it ignored it; under SELECT the ACL plugin
    # drops every flag the user has no right to (RFC 4314 section 4) and says OK.
    # Either way no FETCH comes back and the flags are what they were.
    for store in (("+FLAGS", "(\\Deleted \\Flagged)"), ("-FLAGS", "(\\Flagged)"),
                  ("FLAGS", "(\\Seen Junk)")):
        client.untagged_responses.pop("FETCH", None)
        typ, text = _answer(client, "UID", "STORE", "41,42", *store)
        assert (typ, text) == ("OK", b"Store ignored with read-only mailbox" if readonly
                               else b"Store completed")
        assert "FETCH" not in client.untagged_responses
        assert fetched() == flags
    # A conditional STORE (RFC 7162): refused under EXAMINE; under SELECT the
    # message counts as modified since (the ACL dropped the change), so nothing is.
    client.untagged_responses.pop("FETCH", None)
    typ, text = _answer(client, "UID", "STORE", "41", "(UNCHANGEDSINCE 1)", "+FLAGS",
                        "(\\Flagged)")
    assert (typ, text) == (("NO", b"CONDSTORE failed: Mailbox is read-only") if readonly
                           else ("OK", b"[MODIFIED 41] Conditional store failed"))
    assert "FETCH" not in client.untagged_responses
    assert fetched() == flags
    # EXPUNGE: "OK", and nothing is expunged (imap_expunge() ignores it silently).
    assert _answer(client, "EXPUNGE") == ("OK", b"Expunge completed")
    assert "EXPUNGE" not in client.untagged_responses
    assert fetched() == flags
    # APPEND, CREATE, DELETE, COPY into the view: NO.
    typ, answer = client.append(box, None, None, b"Subject: x\r\n\r\nx\r\n")
    assert typ == "NO" and answer[0].startswith(b"[NOPERM] Permission denied")
    # CREATE, DELETE, RENAME: the ACL refuses them (Dovecot takes its mailbox-list
    # lock in the user's control directory first, and can).
    for name in ("Backups.2026-11-02.Archive.New", "Backups.2026-11-03"):
        typ, answer = client.create(name)
        assert typ == "NO" and answer[0].startswith(b"[NOPERM]"), answer
    typ, answer = client.delete("Backups.2026-11-01.INBOX")
    assert typ == "NO" and answer[0].startswith(b"[NOPERM]")
    typ, answer = client.rename("Backups.2026-11-01.INBOX", "Backups.2026-11-01.Old")
    assert typ == "NO" and answer[0].startswith(b"[NOPERM]")
    typ, answer = client.uid("COPY", "42", "Backups.2026-11-01.INBOX")
    assert typ == "NO" and answer[0].startswith(b"[NOPERM]")
    # COPY out is reading: it works and leaves the source as it was; MOVE out would
    # expunge from the view and is refused whole.
    typ, _ = client.uid("COPY", "42", "INBOX")
    assert typ == "OK"
    typ, answer = client.uid("MOVE", "41", "INBOX")
    assert typ == "NO" and answer[0].startswith(b"[NOPERM]")
    assert fetched() == flags
    # Dovecot takes its uidlist lock in the writable control tree: no command in
    # the view is answered with an untagged NO (a failed sync would add one).
    assert _untagged_no(client) == []
    assert _answer(client, "UNSELECT")[0] == "OK"


def test_a_refresh_after_dovecot_used_the_view_changes_only_the_dates_that_changed(
    dovecot: Dovecot,
) -> None:
    view = dovecot.path("view")
    view.mkdir(mode=0o750)
    os.chown(view, 0, dovecot.gid)
    source = source_with_two_dates()
    refresh_view(source, str(view))
    live = dovecot.path("live", "Maildir")
    dovecot.save(live, "INBOX", mail(9))
    config = "namespace inbox {\n  inbox = yes\n  prefix =\n  separator = .\n}\n"
    config += dovecot_config(str(view))

    def session() -> tuple[list[str], list[bytes]]:
        """The view's folders, and the UIDs of the 2026-11-02 INBOX."""
        with dovecot.imap_server({"alice": live}, extra_config=config) as (host, port):
            client = imaplib.IMAP4(host, port)
            client.login("alice", Dovecot.PASSWORD)
            _, listing = client.list("Backups.*")
            client.select("Backups.2026-11-02.INBOX", readonly=True)
            _, data = client.uid("FETCH", "1:*", "(UID)")
            assert _untagged_no(client) == []
            client.logout()
        names = sorted(line.decode().rsplit('"." ', 1)[1] for line in listing
                       if isinstance(line, bytes))
        return names, [re.search(rb"UID (\d+)", item).group(1) for item in data
                       if isinstance(item, bytes)]

    names, uids = session()  # Dovecot now has its index and locks in the control tree
    assert "Backups.2026-11-01.INBOX" in names and uids == [b"41", b"42"]
    index = view / "control" / "alice" / "2026-11-02" / "INBOX" / "dovecot.index.log"
    assert index.stat().st_uid == dovecot.uid
    kept = _files(view, "users/alice/2026-11-02", "control/alice/2026-11-02")

    source.forget(source.snapshots()[0].id)
    report = refresh_view(source, str(view))
    assert (report.added, report.removed) == ((), (("alice", "2026-11-01"),))
    assert [name for name in os.listdir(view / "control" / "alice")
            if name.startswith("2026-")] == ["2026-11-02"]
    # The date that stayed is as Dovecot left it, its index included.
    assert _files(view, "users/alice/2026-11-02", "control/alice/2026-11-02") == kept

    names, uids = session()
    assert not [name for name in names if "2026-11-01" in name]
    assert uids == [b"41", b"42"]
    for number in (1, 2):
        log = dovecot.path(f"imap{number}", "dovecot.log").read_text(errors="replace")
        assert " Error: " not in log, log
