"""Listing a folder's message files and finding them by key while others rename them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bundlesync.stores.errors import FolderNotFound
from bundlesync.stores.folder_files import (
    COARSE_RACY_NS,
    FINE_RACY_NS,
    Entry,
    FileIndex,
    Lru,
    is_racy,
    marks,
    racy_window_ns,
    stable_listing,
    timestamp_step_ns,
)


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


# --- how long a stamp stays racy --------------------------------------------------------------

SECOND = 1_000_000_000


def test_whole_second_marks_are_a_coarse_file_system_with_a_two_second_window() -> None:
    marks_ = (1_800_000_000 * SECOND, 1_799_999_990 * SECOND)
    assert timestamp_step_ns(marks_) is None
    assert racy_window_ns(marks_) == COARSE_RACY_NS == 2 * SECOND
    assert is_racy(marks_, now_ns=marks_[0] + SECOND + 999_999_999)
    assert not is_racy(marks_, now_ns=marks_[0] + 2 * SECOND)


def test_a_missing_new_or_an_unknown_folder_counts_as_coarse() -> None:
    assert racy_window_ns((0, 0)) == COARSE_RACY_NS
    assert racy_window_ns((1_800_000_000 * SECOND, 0)) == COARSE_RACY_NS
    # One mark with a sub-second part is enough: both directories share a file system.
    assert racy_window_ns((1_800_000_000 * SECOND + 5, 0)) == FINE_RACY_NS


def test_nanosecond_marks_give_the_short_window() -> None:
    marks_ = (1_800_000_000_123_456_789, 1_800_000_000_987_654_321)
    assert timestamp_step_ns(marks_) == 1
    assert racy_window_ns(marks_) == FINE_RACY_NS == 50_000_000
    assert is_racy(marks_, now_ns=marks_[1] + FINE_RACY_NS - 1)
    assert not is_racy(marks_, now_ns=marks_[1] + FINE_RACY_NS)


def test_a_coarser_sub_second_step_widens_the_window() -> None:
    # exFAT keeps mtimes in 10 ms steps; a step seen as 100 ms gets twice that.
    assert timestamp_step_ns((1_800_000_000_120_000_000,)) == 10_000_000
    assert racy_window_ns((1_800_000_000_120_000_000,)) == FINE_RACY_NS
    assert timestamp_step_ns((1_800_000_000_500_000_000,)) == 100_000_000
    assert racy_window_ns((1_800_000_000_500_000_000,)) == 200_000_000


@pytest.mark.slow
def test_on_this_disk_a_change_after_a_settled_stamp_always_moves_it(folder: Path) -> None:
    """The window's premise, on the real file system under the tests: a stamp read once
    it is older than its racy window differs from the stamp after any later change."""
    (folder / "new" / "first").write_bytes(b"x")
    found = marks(str(folder))
    assert found is not None
    if timestamp_step_ns(found) is None:
        pytest.skip("the test directory's file system keeps whole-second mtimes")
    window = racy_window_ns(found)
    assert window == FINE_RACY_NS
    seen = {found}
    for number in range(20):
        now = time.time_ns()
        if is_racy(found, now):
            time.sleep((max(found) + window - now) / 1e9)
        settled = marks(str(folder))
        assert settled == found  # nothing changed meanwhile
        (folder / "new" / f"m{number}").write_bytes(b"x")
        found = marks(str(folder))
        assert found is not None
        assert found != settled
        seen.add(found)
    assert len(seen) == 21


def test_the_file_index_keeps_a_bounded_number_of_files() -> None:
    index = FileIndex(folders=8, entries=5)
    index.remember_entries("a", {str(k): Entry("cur", str(k)) for k in range(3)}, (1, 1))
    index.remember_entries("b", {str(k): Entry("cur", str(k)) for k in range(3)}, (1, 1))
    # "a" went: six files are over the budget of five; the folder in use stays.
    assert index._indexes.get("a") is None
    assert index._indexes.get("b") is not None
    index.remember_entries("c", {str(k): Entry("cur", str(k)) for k in range(9)}, (1, 1))
    assert index._indexes.get("b") is None
    assert index._indexes.get("c") is not None
