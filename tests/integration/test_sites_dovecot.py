"""Real Dovecot as the oracle for whole sites: what site B's Dovecot shows after an
import is exactly what site A's Dovecot shows -- messages, flags, keywords,
mailboxes and their GUIDs, subscriptions -- through ``doveadm`` and through IMAP.

Site A's mail is written by Dovecot itself (``doveadm save``, ``flags add``,
``mailbox create/rename/subscribe``), as on a live server.
"""

from __future__ import annotations

import imaplib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.operations.export import export_drop
from bundlesync.operations.importer import ImportResult, import_drop
from bundlesync.operations.setup import add_peer, init_site, own_card
from bundlesync.operations.site import open_site, site_lock
from tests.dovecot import Dovecot

pytestmark = pytest.mark.dovecot

_clock = itertools.count(1_800_000_000_000, 1_000)
MAILBOXES = ("Sent", "Archive", "Archive.2024", "Entwürfe")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with Dovecot.session() as session:
        yield session


def message(number: int, extra: str = "") -> bytes:
    return (f"From: sender{number}@example.org\nTo: alice@example.org\n"
            f"Message-ID: <m{number}{extra}@example.org>\nSubject: Nachricht {number} {extra}\n"
            f"Date: Thu, 01 Feb 2024 10:{number % 60:02d}:00 +0000\n\n"
            f"Body of message {number} {extra}.\n").encode()


class Pair:
    """Two single-user sites, A and B, whose Maildirs Dovecot serves."""

    def __init__(self, dovecot: Dovecot) -> None:
        self.dovecot = dovecot
        self.maildir = {"a": dovecot.path("a", "Maildir"), "b": dovecot.path("b", "Maildir")}
        self.home = {"a": dovecot.workdir / "home-a", "b": dovecot.workdir / "home-b"}
        self.drop = dovecot.directory("drop")

    def init(self) -> None:
        for name in ("a", "b"):
            with site_lock(self.home[name]):
                init_site(self.home[name], name=f"site-{name}",
                          store_location=str(self.maildir[name]), now_ms=next(_clock))
        cards = {}
        for name in ("a", "b"):
            cards[name] = self.dovecot.workdir / f"{name}.card"
            own_card(self.home[name]).write(cards[name])
        add_peer(self.home["a"], cards["b"], name="site-b")
        add_peer(self.home["b"], cards["a"], name="site-a")

    def export(self, name: str) -> None:
        with site_lock(self.home[name]):
            site = open_site(self.home[name])
            try:
                export_drop(site, self.drop, now_ms=next(_clock))
            finally:
                site.index.close()

    def import_(self, name: str) -> ImportResult:
        with site_lock(self.home[name]):
            site = open_site(self.home[name])
            try:
                return import_drop(site, self.drop, now_ms=next(_clock))
            finally:
                site.index.close()

    def exchange(self) -> None:
        """A -> B, B -> A, A -> B: every change and acknowledgement delivered."""
        self.export("a")
        self.import_("b")
        self.export("b")
        self.import_("a")
        self.export("a")
        self.import_("b")


def populate_with_dovecot(dovecot: Dovecot, maildir: Path) -> None:
    for number in range(1, 6):
        dovecot.save(maildir, "INBOX", message(number))
    dovecot.create_mailbox(maildir, *MAILBOXES)
    for number, box in zip(range(6, 10), MAILBOXES, strict=True):
        dovecot.save(maildir, box, message(number))
    dovecot.flags_add(maildir, "INBOX", "\\Seen", "uid", "1:3")
    dovecot.flags_add(maildir, "INBOX", "\\Flagged $Label1 Projekt", "uid", "2")
    dovecot.flags_add(maildir, "INBOX", "\\Answered \\Draft", "uid", "4")
    dovecot.flags_add(maildir, "Archive.2024", "Work", "all")
    dovecot.subscribe(maildir, "INBOX", "Sent", "Entwürfe")


def imap_view(host: str, port: int) -> dict[str, list[tuple[str, frozenset[str]]]]:
    """Per mailbox: (Message-ID, flags) of every message, as an IMAP client sees them."""
    view: dict[str, list[tuple[str, frozenset[str]]]] = {}
    client = imaplib.IMAP4(host, port)
    try:
        client.login("alice", Dovecot.PASSWORD)
        _typ, listing = client.list()
        names = []
        for line in listing:
            assert isinstance(line, bytes)
            names.append(line.decode().rsplit(' "." ', 1)[1].strip('"'))
        for name in sorted(names):
            client.select(f'"{name}"', readonly=True)
            _typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            rows = []
            for item in data:
                if not isinstance(item, tuple):
                    continue
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                assert flags is not None
                kept = frozenset(f for f in flags.group(1).decode().split() if f != "\\Recent")
                rows.append((item[1].decode().strip(), kept))
            view[name] = sorted(rows)
    finally:
        client.logout()
    return view


def test_import_shows_site_a_exactly_in_doveadm_and_imap(dovecot: Dovecot) -> None:
    pair = Pair(dovecot)
    populate_with_dovecot(dovecot, pair.maildir["a"])
    pair.init()
    pair.export("a")
    result = pair.import_("b")
    assert result.report.added == 9
    assert dovecot.dump(pair.maildir["b"]) == dovecot.dump(pair.maildir["a"])
    # Delivered from the spool (linked, not written): each file Dovecot's user's own,
    # 0600, and a file of its own.
    files = [path for path in pair.maildir["b"].rglob("*")
             if path.parent.name in ("cur", "new") and path.is_file()]
    assert len(files) == 9
    for path in files:
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777, st.st_nlink) == (
            dovecot.uid, dovecot.gid, 0o600, 1)
    assert dovecot.mailboxes(pair.maildir["b"]) == dovecot.mailboxes(pair.maildir["a"])
    assert (dovecot.mailboxes(pair.maildir["b"], subscribed=True)
            == dovecot.mailboxes(pair.maildir["a"], subscribed=True))
    for box in ("INBOX", *MAILBOXES):
        # The mailbox GUID travels: both Dovecots know the mailbox by one identity.
        assert (dovecot.status(pair.maildir["b"], box)["guid"]
                == dovecot.status(pair.maildir["a"], box)["guid"])
    with dovecot.imap_server({"alice": pair.maildir["a"]}) as (host, port):
        view_a = imap_view(host, port)
    with dovecot.imap_server({"alice": pair.maildir["b"]}) as (host, port):
        view_b = imap_view(host, port)
    assert sum(len(rows) for rows in view_a.values()) == 9
    assert view_b == view_a
    assert any("$Label1" in flags for rows in view_b.values() for _m, flags in rows)


def test_concurrent_changes_through_dovecot_converge(dovecot: Dovecot) -> None:
    pair = Pair(dovecot)
    populate_with_dovecot(dovecot, pair.maildir["a"])
    pair.init()
    pair.exchange()
    a, b = pair.maildir["a"], pair.maildir["b"]
    # Concurrently: A reads and labels mail, renames a mailbox, receives mail;
    # B expunges one message, flags another, creates a mailbox and receives mail.
    dovecot.flags_add(a, "INBOX", "\\Seen Todo", "uid", "5")
    dovecot.rename_mailbox(a, "Archive", "Ablage")
    dovecot.save(a, "INBOX", message(20, "a"))
    dovecot.expunge(b, "INBOX", "uid", "1")
    dovecot.flags_add(b, "INBOX", "\\Flagged", "uid", "5")
    dovecot.create_mailbox(b, "Projects")
    dovecot.save(b, "Projects", message(21, "b"))
    pair.exchange()
    dump_a, dump_b = dovecot.dump(a), dovecot.dump(b)
    assert dump_a == dump_b
    flags = {(box, guid): f for box, guid, f in dump_a}
    assert any(box == "Ablage.2024" for box, _g in flags)
    assert any(box == "Projects" for box, _g in flags)
    assert len(dump_a) == 9 - 1 + 2
    inbox = [f for (box, _g), f in flags.items() if box == "INBOX"]
    assert any({"\\Seen", "Todo", "\\Flagged"} <= f for f in inbox)  # both sides' flags kept


def test_modified_bundle_is_refused_and_the_store_untouched(dovecot: Dovecot) -> None:
    pair = Pair(dovecot)
    populate_with_dovecot(dovecot, pair.maildir["a"])
    pair.init()
    pair.export("a")
    bundle = next(p for p in pair.drop.iterdir() if p.name.endswith(".bsb"))
    data = bytearray(bundle.read_bytes())
    data[len(data) // 3] ^= 0x40
    bundle.write_bytes(bytes(data))
    before = sorted(p.relative_to(pair.maildir["b"]) for p in pair.maildir["b"].rglob("*"))
    result = pair.import_("b")
    assert [b.status for b in result.bundles] == ["rejected"]
    after = sorted(p.relative_to(pair.maildir["b"]) for p in pair.maildir["b"].rglob("*"))
    assert after == before
    assert dovecot.dump(pair.maildir["b"]) == []
