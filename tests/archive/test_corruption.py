"""Every single-byte corruption of a small archive is found by check --read-data."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundlesync.archive.check import check_archive
from bundlesync.archive.errors import ArchiveDamaged
from bundlesync.archive.repository import open_archive
from bundlesync.keys import SiteIdentity
from bundlesync.stores.base import INBOX
from tests.archive.conftest import Backups


def _found(path: Path, identity: SiteIdentity) -> bool:
    try:
        report = check_archive(open_archive(path, secret=identity), read_data=True)
    except ArchiveDamaged:
        return True
    return not report.ok


@pytest.mark.slow
def test_every_single_byte_corruption_is_found(backups: Backups) -> None:
    store = backups.store
    store.ensure_user("u@x.org")
    for n in range(2):
        store.add_message("u@x.org", INBOX, key=f"170000000{n}.M1P1.host",
                          data=f"Subject: {n}\r\n\r\nhello {n}\r\n".encode(),
                          flags=frozenset({"\\Seen"}), internal_date=1_700_000_000)
    backups.backup()
    files = sorted(p for p in backups.path.rglob("*") if p.is_file())
    assert _found(backups.path, backups.identity) is False
    missed = []
    for path in files:
        original = path.read_bytes()
        for position in range(len(original)):
            for mask in (0x01, 0xA5):
                damaged = bytearray(original)
                damaged[position] ^= mask
                path.write_bytes(bytes(damaged))
                if not _found(backups.path, backups.identity):
                    missed.append((path.relative_to(backups.path), position, mask))
        path.write_bytes(original)
    assert missed == []
    assert _found(backups.path, backups.identity) is False


def test_a_damaged_body_is_named_and_the_rest_stays_readable(backups: Backups) -> None:
    store = backups.store
    store.ensure_user("u@x.org")
    store.create_folder("u@x.org", ("Work",), guid=None, uidvalidity=None)
    store.add_message("u@x.org", INBOX, key="1700000000.M1P1.host",
                      data=b"Subject: a\r\n\r\nA\r\n", flags=frozenset(),
                      internal_date=1_700_000_000)
    backups.backup()
    store.add_message("u@x.org", ("Work",), key="1700000001.M1P1.host",
                      data=b"Subject: b\r\n\r\nB\r\n", flags=frozenset(),
                      internal_date=1_700_000_000)
    backups.backup()
    packs = sorted((p.stat().st_mtime_ns, p) for p in backups.path.glob("data/*/*"))
    newest = packs[-1][1]
    data = bytearray(newest.read_bytes())
    data[12] ^= 0xFF  # inside the first segment of the second backup's pack
    newest.write_bytes(bytes(data))
    report = check_archive(open_archive(backups.path, secret=backups.identity),
                           read_data=True)
    assert not report.ok
    places = [place for p in report.problems for place in p.affects]
    assert any("mailbox Work" in place for place in places)
    assert not any("mailbox INBOX" in place for place in places)
    reader = backups.reader()
    first = reader.snapshots()[0]
    [inbox] = [b for b in reader.mailboxes(first.id, "u@x.org") if b.path == INBOX]
    assert reader.read_body(inbox.messages[0].body) == b"Subject: a\r\n\r\nA\r\n"
