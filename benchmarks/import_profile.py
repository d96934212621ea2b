"""Profile ``bundlesync import``: a first transfer and a 1 % change, repeatable.

    python -m benchmarks.import_profile prepare WORK [--users 10 --folders 5 --messages 200]
    python -m benchmarks.import_profile run WORK first|one [--mode time|cprofile|sql|strace]

``prepare`` generates a store (``benchmarks.generate``), makes two sites (alpha
reads the store, bravo writes an empty copy), exports alpha's first bundle,
snapshots bravo before importing it, imports it, mutates alpha's store by 1 %
(``benchmarks.mutate``), exchanges the acknowledgement and exports the 1 %
bundle, snapshotting bravo again. ``run`` restores bravo from the snapshot and
imports the chosen bundle once, so every mode measures the same work. The
copy it replaces is set aside and deleted after the measurement, and a run that
starts within a minute of such a deletion waits first: see ``_restore``.

- ``time``: a child process; wall, user and system time;
- ``cprofile``: in this process, the 30 dearest functions by cumulative time;
- ``sql``: in this process, SQL statements by kind (sqlite3's trace callback on
  every connection; an ``executemany`` counts once per row);
- ``strace``: ``strace -c -f`` of a child process (system calls by kind).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, quiet: bool = True) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    subprocess.run([sys.executable, "-m", "bundlesync", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL if quiet else None)


def _snapshot(work: Path, name: str) -> None:
    target = work / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for part in ("bravo", "copy"):
        subprocess.run(["cp", "-a", str(work / part), str(target / part)], check=True)


# The kernel passes over inodes freed in the last minute (five when their table
# block is still dirty; the deletion is followed by a sync, so one).
QUIET_AFTER_DELETE_S = 65


def _restore(work: Path, name: str) -> Path:
    """Put bravo and its copy back as snapshot ``name``; the old ones go aside.

    They are moved, not deleted: on ext4 without a journal, files created soon
    after many were deleted cost several times more system time (the inode
    allocator passes over the recently freed ones), which would bill this
    script's clean-up to the import it measures. The caller deletes the returned
    directory after the measurement (:func:`_put_away`), and a run that follows
    such a deletion within :data:`QUIET_AFTER_DELETE_S` waits out the rest first.
    """
    marker = work / "deleted-at"
    if marker.exists():
        wait = QUIET_AFTER_DELETE_S - (time.time() - float(marker.read_text()))
        if wait > 0:
            print(f"waiting {wait:.0f} s after the last run's clean-up (see _restore)")
            time.sleep(wait)
    aside = work / f"aside-{time.time_ns()}"
    aside.mkdir()
    for part in ("bravo", "copy"):
        if (work / part).exists():
            (work / part).rename(aside / part)
        subprocess.run(["cp", "-a", str(work / name / part), str(work / part)], check=True)
    # The copies are in the page cache; drop what the import writes only.
    os.sync()
    return aside


def _put_away(work: Path, aside: Path) -> None:
    """Delete what :func:`_restore` set aside, and note when (for the next run)."""
    shutil.rmtree(aside, ignore_errors=True)
    os.sync()
    (work / "deleted-at").write_text(f"{time.time()}\n")


def prepare(work: Path, *, users: int, folders: int, messages: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    subprocess.run([sys.executable, "-m", "benchmarks.generate", "--users", str(users),
                    "--folders", str(folders), "--messages", str(messages), "--quiet",
                    str(work / "store")], check=True, env=env)
    (work / "copy").mkdir()
    alpha, bravo = str(work / "alpha"), str(work / "bravo")
    _cli("--home", alpha, "init", "--site", "alpha", "--store", f"{work}/store/%d/%n/Maildir")
    _cli("--home", bravo, "init", "--site", "bravo", "--store", f"{work}/copy/%d/%n/Maildir")
    _cli("--home", alpha, "key", "export", str(work / "alpha.card"))
    _cli("--home", bravo, "key", "export", str(work / "bravo.card"))
    _cli("--home", alpha, "peer", "add", "bravo", str(work / "bravo.card"), "--yes")
    _cli("--home", bravo, "peer", "add", "alpha", str(work / "alpha.card"), "--yes")
    for name in ("first", "back", "one"):
        (work / f"drop-{name}").mkdir()
    _cli("--home", alpha, "export", str(work / "drop-first"))
    _snapshot(work, "before-first")
    _cli("--home", bravo, "import", str(work / "drop-first"))
    _cli("--home", bravo, "export", str(work / "drop-back"))
    _cli("--home", alpha, "import", str(work / "drop-back"))
    subprocess.run([sys.executable, "-m", "benchmarks.mutate", str(work / "store"),
                    "--frac", "0.01", "--seed", "2"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    _cli("--home", alpha, "export", str(work / "drop-one"))
    _snapshot(work, "before-one")


def _count_sql(counts: collections.Counter[str]) -> None:
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = real_connect(*args, **kwargs)  # type: ignore[call-overload]

        def trace(statement: str) -> None:
            words = re.findall(r"[A-Za-z_]+", statement)
            head = " ".join(words[:1]).upper()
            table = ""
            for i, word in enumerate(words):
                if word.upper() in ("INTO", "FROM", "UPDATE") and i + 1 < len(words):
                    table = words[i + 1]
                    break
            counts[f"{head} {table}".strip()] += 1

        db.set_trace_callback(trace)
        return db  # type: ignore[no-any-return]

    sqlite3.connect = connect  # type: ignore[assignment]


def run(work: Path, which: str, mode: str) -> None:
    aside = _restore(work, f"before-{which}")
    try:
        _measure(work, which, mode)
    finally:
        _put_away(work, aside)


def _measure(work: Path, which: str, mode: str) -> None:
    args = ["--home", str(work / "bravo"), "import", str(work / f"drop-{which}")]
    files = sum(len(f) for _, _, f in os.walk(work / "copy"))
    print(f"import of drop-{which} (the copy holds {files} files before)")
    if mode in ("time", "strace"):
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        command = [sys.executable, "-m", "bundlesync", *args]
        if mode == "strace":
            command = ["strace", "-c", "-f", "-o", str(work / "strace.txt"), *command]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"wall {wall:.2f} s, user {after.ru_utime - before.ru_utime:.2f} s, "
              f"sys {after.ru_stime - before.ru_stime:.2f} s, "
              f"max RSS {after.ru_maxrss / 1024:.0f} MiB")
        if mode == "strace":
            print((work / "strace.txt").read_text())
        return
    from bundlesync.cli import main as cli_main

    counts: collections.Counter[str] = collections.Counter()
    if mode == "sql":
        _count_sql(counts)
    profile = cProfile.Profile() if mode == "cprofile" else None
    start, cpu = time.perf_counter(), time.process_time()
    try:
        if profile is not None:
            profile.enable()
        cli_main(args)
    finally:
        if profile is not None:
            profile.disable()
    print(f"wall {time.perf_counter() - start:.2f} s, cpu {time.process_time() - cpu:.2f} s")
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    if counts:
        print(f"{sum(counts.values())} SQL statements")
        for kind, n in counts.most_common(25):
            print(f"{n:8d}  {kind}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("work", type=Path)
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--folders", type=int, default=5)
    p.add_argument("--messages", type=int, default=200)
    r = sub.add_parser("run")
    r.add_argument("work", type=Path)
    r.add_argument("which", choices=("first", "one"))
    r.add_argument("--mode", choices=("time", "cprofile", "sql", "strace"), default="time")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.work, users=args.users, folders=args.folders, messages=args.messages)
    else:
        run(args.work, args.which, args.mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
