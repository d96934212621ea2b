"""Batched delivery: durable and named together when the batch ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
        assert len(os.listdir(tmp_path / "Maildir" / "tmp")) == 5
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

