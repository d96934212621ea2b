"""Listing a folder's message files and finding them by key while others rename them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundlesync.stores.errors import FolderNotFound
from bundlesync.stores.folder_files import Entry, FileIndex, Lru, marks, stable_listing


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    return tmp_path


def test_marks_are_the_mtimes_of_cur_and_new(folder: Path) -> None:
    os.utime(folder / "cur", ns=(5, 5))
    os.utime(folder / "new", ns=(7, 7))
    assert marks(str(folder)) == (5, 7)
    (folder / "new").rmdir()
    assert marks(str(folder)) == (5, 0)
    assert marks(str(folder / "missing")) is None


def test_a_file_in_both_new_and_cur_is_listed_once_from_cur(folder: Path) -> None:
    (folder / "new" / "k").write_bytes(b"x")
    (folder / "cur" / "k:2,S").write_bytes(b"x")
    (folder / "cur" / ".tmpfile").write_bytes(b"x")
    listing, _ = stable_listing(str(folder), is_racy=lambda _marks: False)
    assert {key: entry for key, (entry, _) in listing.items()} == {"k": Entry("cur", "k:2,S")}


def test_a_racy_folder_is_listed_twice(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "cur" / "a:2,").write_bytes(b"x")
    calls = []
    original = os.scandir

    def counting(path: str) -> object:
        calls.append(path)
        return original(path)

    monkeypatch.setattr(os, "scandir", counting)
    stable_listing(str(folder), is_racy=lambda _marks: False)
    assert len(calls) == 2  # new/ and cur/ once
    calls.clear()
    stable_listing(str(folder), is_racy=lambda _marks: True)
    assert len(calls) == 4  # twice, until two listings agree


def test_the_index_finds_a_renamed_file_when_asked_to_refresh(folder: Path) -> None:
    index = FileIndex(folders=2)
    (folder / "cur" / "k:2,S").write_bytes(b"x")
    assert index.locate(str(folder), "k", refresh=False) == Entry("cur", "k:2,S")
    before = (folder / "cur").stat().st_mtime_ns
    (folder / "cur" / "k:2,S").rename(folder / "cur" / "k:2,ST")
    os.utime(folder / "cur", ns=(before, before))  # same clock tick: marks unchanged
    assert index.locate(str(folder), "k", refresh=False) == Entry("cur", "k:2,S")
    assert index.locate(str(folder), "k", refresh=True) == Entry("cur", "k:2,ST")
    (folder / "cur" / "k:2,ST").rename(folder / "new" / "k:2,ST")  # marks move
    assert index.locate(str(folder), "k", refresh=False) == Entry("new", "k:2,ST")


def test_our_own_changes_keep_the_index_without_a_rescan(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = FileIndex(folders=2)
    (folder / "cur" / "k:2,").write_bytes(b"x")
    index.locate(str(folder), "k", refresh=False)
    (folder / "cur" / "k:2,").rename(folder / "cur" / "k:2,F")
    index.changed(str(folder), "k", Entry("cur", "k:2,F"))
    monkeypatch.setattr(os, "scandir", lambda path: pytest.fail(f"rescanned {path}"))
    assert index.locate(str(folder), "k", refresh=False) == Entry("cur", "k:2,F")
    index.changed(str(folder), "k", None)
    assert index.locate(str(folder), "k", refresh=False) is None


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FolderNotFound):
        FileIndex(folders=1).locate(str(tmp_path / "gone"), "k", refresh=False)


def test_the_lru_keeps_the_most_recent_entries() -> None:
    cache: Lru[int] = Lru(2)
    cache.put("/a", 1)
    cache.put("/b", 2)
    assert cache.get("/a") == 1
    cache.put("/c", 3)
    assert (cache.get("/a"), cache.get("/b"), cache.get("/c")) == (1, None, 3)
    cache.drop_below("/a")
    assert cache.get("/a") is None
