"""A restore parses the index entries of the bodies it reads, not the whole archive's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundlesync.archive import repository
from bundlesync.archive.errors import ArchiveDamaged
from bundlesync.archive.objects import BLOB_BODY, BlobRef
from bundlesync.archive.repository import open_archive
from bundlesync.archive.restore import restore_into
from bundlesync.archive.restore_plan import Selection
from bundlesync.archive.secrets import Passphrase
from bundlesync.operations.demo import populate
from bundlesync.stores.maildir import MaildirStore
from tests.restore.archives import PASSPHRASE, TestArchive
from tests.restore.source import day_ms

USER = "bob@example.org"


@pytest.fixture
def archive(tmp_path: Path) -> TestArchive:
    store = MaildirStore(str(tmp_path / "mail" / "%d" / "%n" / "Maildir"))
    populate(store, per_folder=3)
    archive = TestArchive(tmp_path / "archive")
    archive.backup(store, now_ms=day_ms("2026-11-01"))
    return archive


def test_one_users_restore_parses_only_that_users_body_entries(
    archive: TestArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[BlobRef] = []
    real = repository.parse_entry

    def counting(entry: object, pack: bytes, *, what: str) -> BlobRef:
        ref = real(entry, pack, what=what)
        parsed.append(ref)
        return ref

    monkeypatch.setattr(repository, "parse_entry", counting)
    reader = open_archive(archive.path, secret=Passphrase(PASSPHRASE))
    target = MaildirStore(str(tmp_path / "restored" / "%d" / "%n" / "Maildir"))
    report = restore_into(reader, target, at="latest", selection=Selection(users=(USER,)))
    bodies = {r.id for r in parsed if r.kind == BLOB_BODY}
    restored = {m.body for box in reader.mailboxes("latest", USER) for m in box.messages}
    assert report.mailboxes and bodies == {bytes.fromhex(b) for b in restored}
    everyone = {m.body for user in reader.users("latest")
                for box in reader.mailboxes("latest", user) for m in box.messages}
    assert len(everyone) > len(restored)  # the others' bodies were never parsed


def test_a_malformed_body_entry_is_reported_when_that_body_is_read(
    archive: TestArchive,
) -> None:
    writer = open_archive(archive.path, secret=archive.identity)
    pack = bytes(32)
    bad_id = bytes(range(32))
    writer.write_index([(pack, 1, [[BLOB_BODY, bad_id, "not a number", 1, 0, 1]])])
    reader = open_archive(archive.path, secret=Passphrase(PASSPHRASE))
    with pytest.raises(ArchiveDamaged, match="index entry of body 000102"):
        reader.read_body(bad_id.hex())
    # Every other body still reads.
    box = next(reader.mailboxes("latest", USER))
    assert reader.read_body(box.messages[0].body)
