"""Reading many bodies ahead in a thread: in order, bounded, and a vanished file is
passed over exactly as by one-at-a-time reads."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from bundlesync.operations.bodies import BodyFinder
from bundlesync.operations.site import Site, open_site, site_lock
from bundlesync.stores.base import FolderPath, StoredMessage
from bundlesync.stores.maildir import MaildirStore
from tests.operations.conftest import Sites


def _bodies(site: Site) -> list[str]:
    found = set()
    for user in site.store.users():
        for folder in site.index.folders(user):
            for row in site.index.files(user, folder.guid):
                found.add(row.body)
    return sorted(found)


@pytest.fixture
def alpha(sites: Sites) -> Site:
    sites.add("alpha", populate_per_folder=4)
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        yield site  # type: ignore[misc]
        site.index.close()


def test_read_many_gives_every_body_in_order(alpha: Site) -> None:
    bodies = _bodies(alpha)
    assert len(bodies) > 20
    finder = BodyFinder(alpha)
    one_by_one = [(body, finder.read(body)) for body in bodies]
    ahead = list(BodyFinder(alpha).read_many([*bodies, "ee" * 32], ahead_bodies=3,
                                            ahead_bytes=1))
    assert ahead == [*one_by_one, ("ee" * 32, None)]
    assert all(data is not None for _body, data in one_by_one)


def test_read_many_reads_a_bounded_number_ahead(alpha: Site,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = _bodies(alpha)
    started = 0
    lock = threading.Lock()
    read_body = alpha.store.read_body

    def counting(user: str, path: FolderPath, key: str) -> bytes:
        nonlocal started
        with lock:
            started += 1
        return read_body(user, path, key)

    read_messages = alpha.store.read_messages

    def counting_many(user: str, path: FolderPath, keys: Iterable[str], *,
                      max_size: int) -> Iterator[tuple[StoredMessage, bytes | None]]:
        nonlocal started
        keys = list(keys)
        with lock:
            started += len(keys)
        return read_messages(user, path, keys, max_size=max_size)

    monkeypatch.setattr(alpha.store, "read_body", counting)
    monkeypatch.setattr(alpha.store, "read_messages", counting_many)
    reader = BodyFinder(alpha).read_many(bodies, ahead_bodies=4, ahead_bytes=1 << 30)
    for handed, _item in enumerate(reader, start=1):
        assert started <= handed + 4
        if handed == 10:
            reader.close()  # the consumer stops early: nothing is left running
            break
    assert started <= 14


def test_a_file_gone_since_the_scan_is_passed_over(alpha: Site) -> None:
    bodies = _bodies(alpha)
    victim = bodies[5]
    for row in alpha.index.files_with_body(victim):
        folder = next(f for f in alpha.index.folders(row.user) if f.guid == row.folder)
        # The store's own directory for the folder: a name like "Entwürfe" is stored
        # in modified UTF-7, not as written.
        assert isinstance(alpha.store, MaildirStore)
        directory = alpha.store.folder_dir(row.user, folder.path)
        for sub in ("cur", "new"):
            for name in os.listdir(os.path.join(directory, sub)):
                if name.startswith(row.key):
                    Path(directory, sub, name).unlink()
    got = dict(BodyFinder(alpha).read_many(bodies, ahead_bodies=2))
    assert got[victim] is None
    assert all(data is not None for body, data in got.items() if body != victim)
