"""Batched delivery: durable and named together when the batch ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundlesync import fsio
from bundlesync.errors import StoreError
from bundlesync.stores import dotlock, maildir
from bundlesync.stores.base import INBOX
from bundlesync.stores.maildir import MaildirStore


def body(n: int) -> bytes:
    return f"Subject: {n}\n\nbody {n}\n".encode()


def test_messages_appear_when_the_batch_ends(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    with store.batch():
        for n in range(5):
            store.add_message("", INBOX, key=f"k{n}", data=body(n), flags=frozenset(),
                              internal_date=1_700_000_000 + n)
        assert store.messages("", INBOX) == []  # not named yet: Dovecot sees nothing
    listed = store.messages("", INBOX)
    assert [m.key for m in listed] == [f"k{n}" for n in range(5)]
    assert [m.internal_date for m in listed] == [1_700_000_000 + n for n in range(5)]
    assert store.read_body("", INBOX, "k3") == body(3)
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []


def test_a_failed_batch_leaves_no_message_and_no_temporary_file(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    def deliver_then_fail() -> None:
        with store.batch():
            store.add_message("", INBOX, key="k1", data=body(1), flags=frozenset(),
                              internal_date=1)
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        deliver_then_fail()
    assert store.messages("", INBOX) == []
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []


def test_a_batch_is_idempotent_with_what_is_already_there(tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    store.add_message("", INBOX, key="k1", data=body(1), flags=frozenset(), internal_date=1)
    with store.batch():
        store.add_message("", INBOX, key="k1", data=body(1), flags=frozenset(),
                          internal_date=1)
    assert [m.key for m in store.messages("", INBOX)] == ["k1"]



def _calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """Count the calls of ``owner.name`` (still calling it)."""
    seen: list[object] = []
    real = getattr(owner, name)

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return seen


def test_new_keywords_are_written_once_per_folder_per_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    store.create_folder("", ("Work",), guid=None, uidvalidity=None)
    replaced = _calls(monkeypatch, dotlock, "replace_file")
    with store.batch():
        for n in range(30):
            folder = INBOX if n % 2 else ("Work",)
            stored = store.add_message("", folder, key=f"k{n}", data=body(n),
                                       flags=frozenset({"\\Seen", f"kw{n % 28}"}),
                                       internal_date=n)
            assert stored.flags == {"\\Seen", f"kw{n % 28}"}
    assert len(replaced) == 2  # one dovecot-keywords per folder, not one per keyword
    for folder in (INBOX, ("Work",)):
        listed = {m.key: m.flags for m in store.messages("", folder)}
        assert len(listed) == 15
        for key, flags in listed.items():
            assert flags == {"\\Seen", f"kw{int(key[1:]) % 28}"}


def test_the_flags_a_batch_returns_are_the_flags_stored_past_26_keywords(
        tmp_path: Path) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    returned = {}
    with store.batch():
        for n in range(30):
            returned[f"k{n}"] = store.add_message(
                "", INBOX, key=f"k{n}", data=body(n), flags=frozenset({f"kw{n:02d}"}),
                internal_date=n).flags
    listed = {m.key: m.flags for m in store.messages("", INBOX)}
    assert listed == returned
    assert sum(1 for flags in listed.values() if flags) == 26


def test_flag_renames_and_expunges_in_a_batch_sync_each_directory_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    for n in range(20):
        store.add_message("", INBOX, key=f"k{n}", data=body(n), flags=frozenset(),
                          internal_date=n)
    synced = _calls(monkeypatch, fsio, "fsync_dir")
    with store.batch():
        for n in range(10):
            store.set_flags("", INBOX, f"k{n}", frozenset({"\\Seen"}))
        for n in range(10, 20):
            store.expunge("", INBOX, f"k{n}")
        assert synced == []  # durable when the batch ends, before the caller records it
    assert synced == [str(tmp_path / "Maildir" / "cur")]
    assert {m.key: m.flags for m in store.messages("", INBOX)} == {
        f"k{n}": {"\\Seen"} for n in range(10)}


def test_a_batch_larger_than_memory_allows_is_written_in_parts_by_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maildir, "MAX_BYTES_WAITING", 200)
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    with store.batch():
        for n in range(40):
            store.add_message("", INBOX, key=f"k{n}", data=body(n), flags=frozenset(),
                              internal_date=1_700_000_000 + n)
        # Written already (the bytes waiting went over the bound), not named yet.
        assert len(os.listdir(tmp_path / "Maildir" / "tmp")) >= 30
        assert store.messages("", INBOX) == []
    listed = store.messages("", INBOX)
    assert {m.key: m.internal_date for m in listed} == {
        f"k{n}": 1_700_000_000 + n for n in range(40)}
    assert all(store.read_body("", INBOX, f"k{n}") == body(n) for n in range(40))
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []


def test_a_write_failing_in_a_writer_thread_fails_the_batch_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MaildirStore(str(tmp_path / "Maildir"))
    store.ensure_user("")
    real = maildir._write_tmp

    def full_disk(tmp_path_: str, data: bytes, *args: object, **kwargs: object) -> None:
        if data == body(7):
            raise OSError(28, "No space left on device", tmp_path_)
        real(tmp_path_, data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(maildir, "_write_tmp", full_disk)

    def deliver() -> None:
        with store.batch():
            for n in range(20):
                store.add_message("", INBOX, key=f"k{n}", data=body(n), flags=frozenset(),
                                  internal_date=n)

    with pytest.raises(StoreError, match="No space left"):
        deliver()
    assert store.messages("", INBOX) == []
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []


def test_a_batch_touching_many_directories_syncs_the_file_system_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Several users' small changes in one batch: a flag change in each of many folders.
    store = MaildirStore(str(tmp_path / "%u" / "Maildir"))
    users = [f"u{n}" for n in range(maildir._DIR_SYNCS + 1)]
    for user in users:
        store.ensure_user(user)
        store.add_message(user, INBOX, key="k", data=body(0), flags=frozenset(),
                          internal_date=0)
    synced = _calls(monkeypatch, fsio, "fsync_dir")
    flushed = _calls(monkeypatch, fsio, "sync_file_systems")
    with store.batch():
        for user in users:
            store.set_flags(user, INBOX, "k", frozenset({"\\Seen"}))
        assert flushed == []
    assert synced == []
    [directories] = flushed
    assert sorted(directories) == sorted(  # type: ignore[call-overload]
        str(tmp_path / user / "Maildir" / "cur") for user in users)
    assert all(store.messages(user, INBOX)[0].flags == {"\\Seen"} for user in users)
