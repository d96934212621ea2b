"""The profile tool: its parsers, its in-process counters, and a run at a tiny size."""

from __future__ import annotations

import cProfile
import hashlib
import json
import pstats
import shutil
import sqlite3

import pytest
import zstandard

from benchmarks import profile
from benchmarks.generate import StoreStats
from benchmarks.profile import PhaseProfile, import_seconds, parse_strace_summary, render
from benchmarks.profile_child import StatementCounter, category_seconds, install_counter

# strace 6.1's -c table: "usecs/call" and "errors" are blank in some rows.
STRACE_C = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.29    0.041470          20      2036           fsync
 20.00    0.013532           3      4112       331 newfstatat
  0.00    0.000000           0         2           syncfs
  0.00    0.000000                     1         1 mkdir
------ ----------- ----------- --------- --------- ----------------
100.00    0.067663                  6151       332 total
"""


def test_strace_counts_are_read_by_column() -> None:
    assert parse_strace_summary(STRACE_C) == {"fsync": 2036, "newfstatat": 4112, "syncfs": 2,
                                              "mkdir": 1}
    with pytest.raises(ValueError, match="no strace -c table"):
        parse_strace_summary("strace: ptrace(PTRACE_TRACEME, ...): Operation not permitted")


def test_a_missing_strace_is_said_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert profile.strace_unusable() == "strace is not installed (Debian: `strace`)"


def test_import_time_is_the_sum_of_the_self_column() -> None:
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       120 |        120 |   zipimport\n"
              "Scanned the store: nothing new\n"
              "import time:      2880 |       3000 | bundlesync\n")
    assert import_seconds(stderr) == pytest.approx(0.003)
    assert import_seconds("no imports reported") is None


def test_every_connection_is_traced_and_statements_group_by_kind() -> None:
    counter = StatementCounter()
    original = install_counter(counter)
    try:
        db = sqlite3.connect(":memory:", isolation_level=None)  # no implicit BEGIN
        db.execute("CREATE TABLE t (a, b)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(1, "x"), (2, "it''s")])
        db.execute("SELECT a FROM t WHERE b = 'x'").fetchall()
        db.close()
    finally:
        sqlite3.connect = original  # type: ignore[assignment]
    assert counter.total == 4  # executemany: once per row
    assert counter.by_text["INSERT INTO t VALUES (?, ?)"] == 2
    assert counter.by_text["SELECT a FROM t WHERE b = ?"] == 1


def _work() -> None:
    data = b"mail " * 200_000
    for _ in range(20):
        hashlib.sha256(data).digest()
    zstandard.ZstdCompressor(level=3).compress(data)
    db = sqlite3.connect(":memory:")
    db.execute("SELECT 1").fetchall()
    db.close()


def test_time_in_zstd_hashing_and_sqlite_is_found_in_a_profile() -> None:
    profiler = cProfile.Profile()
    profiler.runcall(_work)
    seconds = category_seconds(pstats.Stats(profiler))
    assert seconds["hashing"] > 0 and seconds["zstd"] > 0 and seconds["sqlite"] > 0
    assert seconds["scan"] == 0 and seconds["crypto"] == 0
    assert seconds["hashing"] + seconds["zstd"] <= seconds["total"]


def test_the_table_has_a_row_per_phase_and_per_change_figures() -> None:
    stats = StoreStats(users=1, folders=1, messages=1000, bytes=25_000_000)
    init = PhaseProfile("init", 1000, seconds=2.0, cpu_seconds=1.5, max_rss_kb=40 * 1024,
                        import_seconds=0.12, statements=6000, syscalls=30_000,
                        syncs={"fsync": 3, "fdatasync": 4, "syncfs": 0, "sync": 0},
                        profile_seconds={"total": 4.0, "zstd": 0.0, "crypto": 0.2,
                                         "hashing": 0.4, "sqlite": 1.0, "scan": 3.0})
    change = PhaseProfile("1 % import", 10, seconds=0.5)
    text = render(header=["Command: `x`"], store=stats, changes=10, phases=[init, change],
                  notes=["strace is not installed"])
    assert ("| init | 2.00 s | 1.50 s | 120 ms | 40 MiB | 6,000 (6.0) | 30,000 (30.0) | 3 | 4 "
            "| 0 | 0 % | 5 % | 10 % | 25 % | 75 % |") in text
    assert "| 1 % import (per change) | 500 ms | — | — | — | — | — | — | — | — |" in text
    assert text.endswith("- strace is not installed")


@pytest.mark.slow
def test_a_tiny_store_profiled_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    # 50 messages; 5 % of them changed, so that the change round is not empty.
    assert profile.main(["--size", "tiny", "--messages", "2", "--frac", "0.05", "--json",
                         "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["command"].startswith("python -m benchmarks.profile --size tiny")
    assert report["store"]["messages"] == 5 * 5 * 2
    phases = {p["phase"]: p for p in report["phases"]}
    assert list(phases) == list(profile.PHASES)
    for p in phases.values():
        assert p["seconds"] > 0 and p["cpu_seconds"] > 0 and p["max_rss_kb"] > 0
        assert p["import_seconds"] > 0
        assert p["statements"] > 0 and p["profile_seconds"]["total"] > 0
    # Every message is a row of the index: at least one statement each.
    assert phases["init"]["statements"] >= 50
    assert phases["first import"]["profile_seconds"]["zstd"] > 0
    assert phases["1 % export"]["per"] == report["changes"] > 0
    if shutil.which("strace") is None:
        assert "strace is not installed" in report["notes"][0]
        assert phases["init"]["syscalls"] is None
    else:
        assert phases["first import"]["syscalls"] > 100
        # The first import makes 50 messages durable: at least one sync of some kind.
        assert sum(phases["first import"]["syncs"].values()) > 0
