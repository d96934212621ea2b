"""The demo mail is the same bytes on every run: tests that pick a message by its
body's hash, or compare digests across runs, must pick the same one each time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.operations.demo import USERS, demo_message, populate
from bundlesync.stores.maildir import MaildirStore


@pytest.fixture(autouse=True)
def _global_random_restored() -> Iterator[None]:
    """These tests reseed the global generator; the rest of the suite gets it back."""
    state = random.getstate()
    yield
    random.setstate(state)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_a_demo_message_with_an_attachment_is_the_same_bytes_whatever_random_says() -> None:
    for number in (0, 5, 1005, 4010):  # every fifth message carries an attachment
        random.seed(1)
        first, _ = demo_message(USERS[0], number)
        random.seed(2)
        second, _ = demo_message(USERS[0], number)
        assert b"multipart/mixed" in first
        assert first == second


def test_populate_writes_the_same_bytes_twice(tmp_path: Path) -> None:
    roots = [tmp_path / "one", tmp_path / "two"]
    for seed, root in enumerate(roots):
        random.seed(seed)
        populate(MaildirStore(str(root / "%d" / "%n" / "Maildir")), per_folder=6)
    one, two = (_files(root) for root in roots)
    messages = [name for name in one if "/cur/" in name or "/new/" in name]
    assert len(messages) == 2 * 5 * 6
    assert {name: one[name] for name in messages} == {name: two.get(name) for name in messages}
