"""Backups of a real Maildir store, read back through the SnapshotSource contract."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bundlesync.archive.backup import parse_uidlist
from bundlesync.archive.errors import ArchiveDamaged, WrongSecret
from bundlesync.archive.repository import open_archive
from bundlesync.archive.secrets import Passphrase, RecoveryCard
from bundlesync.archive.users import UserSelection
from bundlesync.operations.demo import demo_message, populate
from bundlesync.stores.base import INBOX
from tests.archive.conftest import Backups, tick
from tests.archive.views import snapshot_view, store_view


def test_first_backup_holds_the_store_and_reads_with_the_passphrase(backups: Backups) -> None:
    populate(backups.store, per_folder=5)
    report = backups.backup()
    assert report.users == 2 and report.messages == 50 and report.bodies_added == 50
    reader = backups.reader()
    [snap] = reader.snapshots()
    assert snapshot_view(reader, snap.id) == store_view(backups.store)
    assert snap.messages == 50 and snap.users == 2


def test_a_flag_change_costs_metadata_only_and_old_snapshots_stay(backups: Backups) -> None:
    populate(backups.store, per_folder=5)
    backups.backup()
    before = store_view(backups.store)
    user = "alice@example.org"
    key = backups.store.messages(user, INBOX)[0].key
    backups.store.set_flags(user, INBOX, key, frozenset({"\\Answered", "Work"}))
    report = backups.backup()
    assert report.bodies_added == 0 and report.body_bytes_read == 0
    reader = backups.reader()
    first, second = reader.snapshots()
    assert snapshot_view(reader, first.id) == before
    assert snapshot_view(reader, second.id) == store_view(backups.store)


def test_a_body_in_two_users_is_stored_once(backups: Backups) -> None:
    data, _date = demo_message("alice@example.org", 1)
    for user in ("a@x.org", "b@x.org"):
        backups.store.ensure_user(user)
        backups.store.add_message(user, INBOX, key="1700000000.M1P1.host", data=data,
                                  flags=frozenset(), internal_date=1_700_000_000)
    report = backups.backup()
    assert report.bodies_added == 1 and report.messages == 2


def test_no_change_backup_lists_no_folder(backups: Backups) -> None:
    populate(backups.store, per_folder=3)
    old = 1_600_000_000
    for dirpath, _dirs, files in os.walk(backups.root / "mail"):
        for name in files:
            os.utime(os.path.join(dirpath, name), (old, old))
        os.utime(dirpath, (old, old))
    backups.backup()
    report = backups.backup()
    assert report.folders == 10 and report.folders_listed == 0
    assert report.bytes_added == 0 and report.messages == 30


def test_uids_uidvalidity_and_guid_come_from_dovecot_uidlist(backups: Backups) -> None:
    store = backups.store
    store.ensure_user("u@x.org")
    store.create_folder("u@x.org", ("Work",), guid="0123456789abcdef0123456789abcdef",
                        uidvalidity=1234)
    msg = store.add_message("u@x.org", ("Work",), key="1700000000.M1P1.host",
                            data=demo_message("u@x.org", 1)[0], flags=frozenset({"\\Seen"}),
                            internal_date=1_700_000_000)
    directory = Path(store.folder_dir("u@x.org", ("Work",)))
    (directory / "dovecot-uidlist").write_text(
        "3 V1234 N8 G0123456789abcdef0123456789abcdef\n"
        f"7 G89ab :{msg.key}:2,S\n")
    backups.backup()
    reader = backups.reader()
    snap = reader.snapshots()[-1]
    [box] = [b for b in reader.mailboxes(snap.id, "u@x.org") if b.path == ("Work",)]
    assert (box.guid, box.uidvalidity, box.uidnext) == (
        "0123456789abcdef0123456789abcdef", 1234, 8)
    [message] = box.messages
    assert message.uid == 7 and message.guid == "89ab" and message.flags == {"\\Seen"}


def test_parse_uidlist_versions() -> None:
    assert parse_uidlist("1 42 10\n3 1700.M1P1.h:2,S\n") == (42, 10, {"1700.M1P1.h": 3})
    assert parse_uidlist("3 V5 N3\n1 :a.b.c:2,\n2 W12 :d.e.f\n") == (
        5, 3, {"a.b.c": 1, "d.e.f": 2})


def test_a_wrong_passphrase_is_refused(backups: Backups) -> None:
    with pytest.raises(WrongSecret):
        open_archive(backups.path, secret=Passphrase("wrong"))
    with pytest.raises(WrongSecret):
        open_archive(backups.path, secret=RecoveryCard(bytes(32)))


def test_user_masks_select_users(backups: Backups) -> None:
    populate(backups.store, per_folder=1)
    report = backups.backup(users=UserSelection(("a*",)))
    assert report.users == 1
    reader = backups.reader()
    assert reader.users(reader.snapshots()[-1].id) == ["alice@example.org"]
    report = backups.backup(users=UserSelection(("nobody@x.org",)))
    assert report.failed == {"nobody@x.org": "the store has no such user"}


def test_read_data_subsets_rotate_over_every_pack() -> None:
    from bundlesync.archive.check import subset_selects

    packs = [bytes([i]) * 32 for i in range(0, 256, 3)] + [os.urandom(32) for _ in range(40)]
    seen: set[bytes] = set()
    for day in range(20):  # 5 % a day: twenty days read everything
        chosen = {p for p in packs if subset_selects(p, 5, day)}
        assert len(chosen) < len(packs) / 2
        seen |= chosen
    assert seen == set(packs)


def test_check_with_a_subset_reads_part_of_the_archive(backups: Backups) -> None:
    from bundlesync.archive.check import check_archive

    populate(backups.store, per_folder=2)
    backups.backup()
    full = check_archive(backups.reader(), read_data=True)
    some = check_archive(backups.reader(), subset_percent=50, day=3)
    assert full.ok and some.ok
    assert full.packs_read == full.packs and some.packs_read <= full.packs_read


def test_a_backup_keeps_no_index_in_memory_and_a_reader_still_finds_every_body(
        backups: Backups) -> None:
    populate(backups.store, per_folder=3)
    backups.backup()
    data, _date = demo_message("alice@example.org", 99)
    backups.store.add_message("alice@example.org", INBOX, key="1700000099.M9P9.host",
                              data=data, flags=frozenset(), internal_date=1_700_000_099)
    report = backups.backup()
    archive = backups.archive
    # What the archive holds was asked of the cache (bundlesync.archive.cache), not of
    # an index loaded into the Archive object.
    assert report.bodies_added == 1 and archive._index is None
    newest = archive.snapshots()[-1].id
    for box in archive.mailboxes(newest, "alice@example.org"):
        for message in box.messages:
            assert len(archive.read_body(message.body)) == message.size
    again = backups.backup()
    assert again.bodies_added == 0


def test_the_parent_snapshot_comes_from_a_local_cache_checked_against_the_archive(
        backups: Backups, tmp_path: Path) -> None:
    from bundlesync.archive.backup import newest_snapshot, run_backup
    from bundlesync.operations.config import MailboxFilter

    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)
    for _ in range(3):
        archive = open_archive(backups.path, secret=backups.identity)
        run_backup(archive, backups.store, users=UserSelection(), filters=MailboxFilter(),
                   now_ms=tick(), cache_dir=cache)
    newest = backups.reader().snapshots()[-1].id
    archive = open_archive(backups.path, secret=backups.identity)
    opened: list[str] = []
    real = archive.load_snapshot

    def counting(name: str, *, keep: bool = True) -> object:
        opened.append(name)
        return real(name, keep=keep)

    archive.load_snapshot = counting  # type: ignore[method-assign,assignment]
    snap = newest_snapshot(archive, cache)
    assert snap is not None and snap.id == newest and opened == [newest]
    # A cache that lies about the times is caught by the snapshot it names.
    [cache_file] = cache.glob("snapshots-*.json")
    lies = dict.fromkeys(archive.snapshot_names(), 0)
    lies[min(lies)] = 1 << 60
    cache_file.write_text(json.dumps(lies), encoding="utf-8")
    again = newest_snapshot(open_archive(backups.path, secret=backups.identity), cache)
    assert again is not None and again.id == newest
    cache_file.write_text("not json", encoding="utf-8")
    third = newest_snapshot(open_archive(backups.path, secret=backups.identity), cache)
    assert third is not None and third.id == newest


def test_a_snapshot_forgotten_while_the_list_is_read_is_left_out_not_called_damage(
    backups: Backups, monkeypatch: pytest.MonkeyPatch,
) -> None:
    populate(backups.store, per_folder=2)
    backups.backup()
    backups.backup()
    reader = backups.reader()
    first, second = reader.snapshot_names()
    listed = reader.snapshot_names

    def listed_then_forgotten() -> list[str]:
        names = listed()
        reader.forget_snapshot(first)  # a forget between the listing and the reads
        return names

    monkeypatch.setattr(reader, "snapshot_names", listed_then_forgotten)
    assert [s.id for s in reader.all_snapshots()] == [second]


def test_a_listed_snapshot_that_cannot_be_read_is_still_damage(backups: Backups) -> None:
    populate(backups.store, per_folder=2)
    backups.backup()
    reader = backups.reader()
    [name] = reader.snapshot_names()
    path = backups.path / "snapshots" / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveDamaged):
        reader.all_snapshots()
