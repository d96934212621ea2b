"""Run one bundlesync command in this process, counting its SQL and profiling it.

    BENCHMARK_PROFILE_OUT=stats.json python -c \
        "from benchmarks.profile_child import main; main()" bundlesync-args...

Used by :mod:`benchmarks.profile` for its counting pass. Nothing in bundlesync
is changed: ``sqlite3.connect`` is wrapped before bundlesync is imported, so
every connection it opens gets a trace callback (SQLite calls it once per
statement run, and once per row of an ``executemany``), and the command runs
under :mod:`cProfile`. The figures (statements, the commonest statements, and
the time spent in zstd, crypto, hashing, SQLite and the store scan) are written
as JSON to the file named by ``BENCHMARK_PROFILE_OUT``. The exit code is the
command's.

The profile slows the command down (often twice as slow): its times are for
shares, never compared with the timing pass.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import re
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

OUT_ENV = "BENCHMARK_PROFILE_OUT"

# A profile entry: (file name, line, function name). C functions have file "~"
# and a name like "<method 'compress' of 'zstandard.backend_c.ZstdCompressor' objects>".
FuncKey = tuple[str, int, str]


def _is_zstd(key: FuncKey) -> bool:
    file, _, name = key
    return "zstandard" in file or "zstd" in name.lower()


def _is_crypto(key: FuncKey) -> bool:
    file, _, name = key
    return ("/cryptography/" in file or "cryptography" in name or "_rust" in name
            or "Ed25519" in name or "ChaCha20" in name or "X25519" in name)


def _is_hashing(key: FuncKey) -> bool:
    _, _, name = key
    return "_hashlib" in name or "_blake2" in name or "_sha2" in name


def _is_sqlite(key: FuncKey) -> bool:
    _, _, name = key
    return "sqlite3.Connection" in name or "sqlite3.Cursor" in name


# The store scan: listing folders and diffing them against the index. Module
# names, so that a function renamed inside them is still counted.
SCAN_FILES = ("bundlesync/operations/scan.py", "bundlesync/operations/scandiff.py",
              "bundlesync/stores/folder_files.py")


def _is_scan(key: FuncKey) -> bool:
    file = key[0].replace(os.sep, "/")
    return file.endswith(SCAN_FILES)


CATEGORIES: dict[str, Callable[[FuncKey], bool]] = {
    "zstd": _is_zstd,
    "crypto": _is_crypto,
    "hashing": _is_hashing,
    "sqlite": _is_sqlite,
    "scan": _is_scan,
}


def category_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Inclusive seconds per category, and ``total`` (every function's own time).

    A category's time is the cumulative time of its functions as entered from
    functions outside it: nested calls inside the category are not counted
    twice, and what it calls outside (the scan's SQL, say) is included, as a
    "time in the scan" figure should.
    """
    table: dict[FuncKey, Any] = stats.stats  # type: ignore[attr-defined]
    out = {"total": sum(entry[2] for entry in table.values())}
    for name, member in CATEGORIES.items():
        seconds = 0.0
        for key, (_, _, _, cumulative, callers) in table.items():
            if not member(key):
                continue
            if not callers:
                seconds += cumulative
                continue
            seconds += sum(c[3] for caller, c in callers.items() if not member(caller))
        out[name] = seconds
    return out


_SPACES = re.compile(r"\s+")
# The trace callback sees statements with their values bound; these are put back
# as "?" so that one statement run for many rows counts as one kind.
_VALUES = re.compile(r"[xX]?'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


class StatementCounter:
    """A trace callback: counts statements, and the commonest ones by their text."""

    def __init__(self) -> None:
        self.total = 0
        self.by_text: Counter[str] = Counter()

    def __call__(self, statement: str) -> None:
        self.total += 1
        text = _VALUES.sub("?", _SPACES.sub(" ", statement.strip()))
        self.by_text[text[:100]] += 1


def install_counter(counter: StatementCounter) -> Callable[..., sqlite3.Connection]:
    """Wrap ``sqlite3.connect`` so that every new connection is traced; returns the original."""
    original = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = original(*args, **kwargs)
        db.set_trace_callback(counter)
        return db

    sqlite3.connect = connect  # type: ignore[assignment]  # same signature, typeshed overloads
    return original


def main() -> None:
    out = os.environ.pop(OUT_ENV)
    counter = StatementCounter()
    install_counter(counter)
    sys.argv = ["bundlesync", *sys.argv[1:]]
    profiler = cProfile.Profile()
    code: int | str | None = 0
    profiler.enable()
    try:
        from bundlesync.cli import main as bundlesync_main  # imported under the profile

        bundlesync_main()
    except SystemExit as exc:
        code = exc.code
    finally:
        profiler.disable()
        seconds = category_seconds(pstats.Stats(profiler))
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"statements": counter.total,
                       "top_statements": counter.by_text.most_common(8),
                       "profile_seconds": seconds}, fh)
    sys.exit(code)
