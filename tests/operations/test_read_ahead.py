"""Reading the store ahead of init's inventory: at most one user ahead, never failing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bundlesync.operations.setup import _ReadAhead
from bundlesync.stores import maildir
from bundlesync.stores.maildir import MaildirStore
from bundlesync.stores.memory import MemoryStore
from tests.operations.conftest import Sites


class _Recording(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def prefetch(self, user: str) -> None:
        with self.lock:
            self.asked.append(user)

    def seen(self) -> list[str]:
        with self.lock:
            return list(self.asked)


def _settle(store: _Recording, expected: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(store.seen()) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # and nothing beyond it
    return store.seen()


def test_the_read_ahead_stays_one_user_ahead_of_the_scan() -> None:
    store = _Recording()
    users = ["a", "b", "c", "d"]
    with _ReadAhead(store, users) as ahead:
        assert _settle(store, 1) == ["a"]
        ahead.scanning("a")
        assert _settle(store, 2) == ["a", "b"]
        ahead.scanning("b")
        ahead.scanning("c")
        assert _settle(store, 4) == users
    # Leaving early stops it without waiting for the scan.
    store = _Recording()
    with _ReadAhead(store, users):
        pass
    assert store.seen() in ([], ["a"])


def test_prefetch_is_a_hint_that_never_fails(sites: Sites, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = sites.add("alpha", populate_per_folder=2)
    user = store.users()[0]
    root = store.location.path_for(user)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "cur").mkdir(parents=True)
    (elsewhere / "cur" / "secret").write_bytes(b"x")
    os.symlink(elsewhere, os.path.join(root, ".Linked"))
    os.mkfifo(os.path.join(root, "cur", "a-fifo"))
    os.mkdir(os.path.join(root, ".Odd"))
    os.symlink(elsewhere / "cur", os.path.join(root, ".Odd", "cur"))
    hinted: list[str] = []
    real = maildir._read_ahead
    monkeypatch.setattr(maildir, "_read_ahead", lambda path: (hinted.append(path), real(path)))
    store.prefetch(user)
    # Every message file of the user, and nothing through a symlink, nor the FIFO.
    messages = sum(len(store.message_names(user, f.path)) for f in store.folders(user))
    assert len(hinted) == messages > 0
    assert all(path.startswith(root) and "Linked" not in path and ".Odd" not in path
               and "fifo" not in path for path in hinted)
    store.prefetch("nobody@example.org")
    MaildirStore(str(tmp_path / "missing" / "%d" / "%n")).prefetch("a@b.c")
