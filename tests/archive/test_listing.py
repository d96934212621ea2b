"""Listings rebuilt from copied bytes (bundlesync.archive.listing): the same bytes as
encoding the whole list, spans that do not check are never used, and an incremental
backup with the cache encodes only the entries that changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundlesync.archive import listing
from bundlesync.archive.backup import BackupReport, run_backup
from bundlesync.archive.cache import SPANS_MAGIC, cache_path
from bundlesync.archive.check import check_archive
from bundlesync.archive.listing import Builder, array_head, dump_spans, encode_entry, load_spans
from bundlesync.archive.repository import open_archive
from bundlesync.archive.users import UserSelection
from bundlesync.operations.config import MailboxFilter
from bundlesync.operations.demo import demo_message, populate
from bundlesync.state.archive_cache import ArchiveCacheDb, listings_dir
from tests.archive.conftest import Backups, tick
from tests.archive.views import snapshot_view, store_view

entry = st.tuples(
    st.text(min_size=1, max_size=30), st.text(max_size=40), st.binary(min_size=32, max_size=32),
    st.integers(0, 2**40), st.lists(st.text(max_size=12), unique=True).map(sorted),
    st.none() | st.integers(1, 2**32 - 1), st.integers(0, 2**35)).map(list)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(entries=st.lists(entry, max_size=40), gone=st.sets(st.integers(0, 39)))
def test_copied_and_encoded_entries_make_the_bytes_of_the_whole_list(
        entries: list[list[object]], gone: set[int]) -> None:
    builder = Builder()
    builder.parts = [None if n in gone else encode_entry(e) for n, e in enumerate(entries)]
    kept = [e for n, e in enumerate(entries) if n not in gone]
    data, offsets, count = builder.finish()
    assert data == cbor2.dumps(kept, canonical=True)
    assert count == len(kept) and len(offsets) == count + 1 and offsets[-1] == len(data)
    # Each span is exactly one entry's encoding.
    assert [cbor2.loads(data[offsets[n]:offsets[n + 1]]) for n in range(count)] == kept


@pytest.mark.parametrize("count", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_array_heads_are_cbors_own(count: int) -> None:
    whole = cbor2.dumps([0] * count, canonical=True)
    assert whole == array_head(count) + b"\x00" * count


def test_spans_that_do_not_check_are_not_used() -> None:
    entries = [[f"k{n}", f"k{n}", bytes(32), n, [], None, n] for n in range(5)]
    builder = Builder()
    builder.parts = [encode_entry(e) for e in entries]
    data, offsets, count = builder.finish()
    tree_id = hashlib.sha256(data).digest()
    stored = dump_spans(tree_id, offsets)
    assert load_spans(tree_id, stored, data, count) == offsets
    assert load_spans(b"\x01" * 32, stored, data, count) is None  # another tree's
    flipped = bytearray(stored)
    flipped[-3] ^= 1
    assert load_spans(tree_id, bytes(flipped), data, count) is None
    assert load_spans(tree_id, stored, data, count + 1) is None
    assert load_spans(tree_id, stored, data + b"\x00", count) is None
    assert load_spans(tree_id, stored[:-1], data, count) is None


def _backup(backups: Backups, cache: Path) -> BackupReport:
    opened = open_archive(backups.path, secret=backups.identity)
    return run_backup(opened, backups.store, users=UserSelection(), filters=MailboxFilter(),
                      now_ms=tick(), cache_dir=cache,
                      cache_rows=ArchiveCacheDb.open(cache_path(cache, opened)))


def _touch_every_folder(backups: Backups, number: int) -> int:
    """A new message in every folder, a flag change on one message per folder."""
    changed = 0
    for user in backups.store.users():
        for info in backups.store.folders(user):
            data, _date = demo_message(user, 60_000 + number)
            number += 1
            backups.store.add_message(user, info.path, key=f"19000{number:05d}.M{number}P3.h",
                                      data=data, flags=frozenset(),
                                      internal_date=1_700_000_000)
            first = next(iter(sorted(backups.store.message_names(user, info.path))))
            backups.store.set_flags(user, info.path, first, frozenset({"\\Flagged"}))
            changed += 2
    return changed


def _count_encodings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = listing.encode_entry

    def counted(value: list[object]) -> bytes:
        calls[0] += 1
        return real(value)

    monkeypatch.setattr(listing, "encode_entry", counted)
    monkeypatch.setattr("bundlesync.archive.backup.encode_entry", counted)
    return calls


def test_a_backup_encodes_only_new_and_changed_entries(
        backups: Backups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)  # one message per folder unchanged, copied
    _backup(backups, cache)
    changed = _touch_every_folder(backups, 0)
    calls = _count_encodings(monkeypatch)
    report = _backup(backups, cache)
    assert report.folders_listed == report.folders > 0
    assert calls[0] == changed < report.messages
    reader = backups.reader()
    assert snapshot_view(reader, reader.snapshots()[-1].id) == store_view(backups.store)


def test_damaged_spans_are_ignored_and_the_listing_is_encoded_again(
        backups: Backups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    populate(backups.store, per_folder=2)  # one message per folder unchanged, copied
    _backup(backups, cache)
    files = list(listings_dir(cache_path(cache, backups.archive)).iterdir())
    assert files
    for file in files:  # the last offset's lowest byte: the listing itself is intact
        damaged = bytearray(file.read_bytes())
        assert damaged.startswith(SPANS_MAGIC)
        damaged[-4] ^= 0x01
        file.write_bytes(bytes(damaged))
    _touch_every_folder(backups, 100)
    calls = _count_encodings(monkeypatch)
    report = _backup(backups, cache)
    assert calls[0] == report.messages  # every entry encoded again, none copied
    reader = backups.reader()
    assert snapshot_view(reader, reader.snapshots()[-1].id) == store_view(backups.store)
    assert check_archive(backups.reader(), read_data=True).ok
