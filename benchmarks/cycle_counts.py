"""Counts behind the 1 % change cycle: SQL statements, folders listed, CPU time.

Wall time on a shared machine is noise; counts are not. This runs two sites in
one process on a generated store, then rounds of "change 1 % of the store,
export at alpha, import at bravo", and reports for each export and import the
SQL statements the state index ran (sqlite3's trace callback; an
``executemany`` counts once per row), the changes logged, the folders whose
messages were listed, and the CPU time of the process::

    python -m benchmarks.cycle_counts --users 10 --folders 5 --messages 200 --rounds 2

The first round after the first transfer is the one that shows folders listed
again because the first import did not keep their stamps; later rounds show the
routine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.generate import generate_store
from benchmarks.mutate import mutate_store
from bundlesync.cli import main as cli_main
from bundlesync.state import index as index_module
from bundlesync.stores import folder_files

_LITERAL = re.compile(r"[Xx]'[0-9A-Fa-f]*'|'(?:[^']|'')*'|\b\d+\b")


@dataclass
class Counts:
    """What one command did."""

    statements: int = 0
    changes: int = 0
    listings: int = 0
    cpu_s: float = 0.0
    shapes: Counter[str] = field(default_factory=Counter)


class Probe:
    """Counts statements of every state index opened, and folder listings."""

    def __init__(self) -> None:
        self.current: Counts | None = None

    def statement(self, sql: str) -> None:
        if self.current is not None:
            self.current.statements += 1
            self.current.shapes[" ".join(_LITERAL.sub("?", sql).split())[:100]] += 1
            if sql.lstrip().upper().startswith("INSERT INTO CHANGES"):
                self.current.changes += 1

    def listing(self) -> None:
        if self.current is not None:
            self.current.listings += 1

    @contextmanager
    def installed(self) -> Iterator[None]:
        opened = index_module.StateIndex.__init__
        scan_names = folder_files.scan_names
        probe = self

        def traced(self: index_module.StateIndex, *args: Any, **kwargs: Any) -> None:
            opened(self, *args, **kwargs)
            self.trace(probe.statement)

        def counted(directory: str, **kwargs: Any) -> dict[str, folder_files.Entry]:
            probe.listing()
            return scan_names(directory, **kwargs)

        index_module.StateIndex.__init__ = traced  # type: ignore[method-assign]
        folder_files.scan_names = counted
        try:
            yield
        finally:
            index_module.StateIndex.__init__ = opened  # type: ignore[method-assign]
            folder_files.scan_names = scan_names

    def run(self, args: list[str]) -> Counts:
        counts = Counts()
        self.current = counts
        start = time.process_time()
        try:
            code = cli_main(args)
        finally:
            counts.cpu_s = time.process_time() - start
            self.current = None
        if code != 0:
            raise SystemExit(f"bundlesync {' '.join(args)} exited with {code}")
        return counts


def _cli(home: Path) -> Callable[..., list[str]]:
    return lambda *args: ["--home", str(home), "--quiet", *args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--folders", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200, help="per folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--frac", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top", type=int, default=0, help="print the N commonest statements")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bundlesync-counts-"))
    try:
        source, copy = work / "source", work / "copy"
        generate_store(source, users=args.users, folders=args.folders,
                       messages=args.messages, seed=args.seed, quiet=True)
        copy.mkdir()
        alpha, bravo = _cli(work / "alpha"), _cli(work / "bravo")
        probe = Probe()
        with probe.installed():
            probe.run(alpha("init", "--site", "alpha", "--store", f"{source}/%d/%n/Maildir"))
            probe.run(bravo("init", "--site", "bravo", "--store", f"{copy}/%d/%n/Maildir"))
            probe.run(alpha("key", "export", str(work / "a.card")))
            probe.run(bravo("key", "export", str(work / "b.card")))
            probe.run(alpha("peer", "add", "bravo", str(work / "b.card"), "--yes"))
            probe.run(bravo("peer", "add", "alpha", str(work / "a.card"), "--yes"))
            drop = work / "drop"

            def cycle(first: Callable[..., list[str]], second: Callable[..., list[str]]
                      ) -> tuple[Counts, Counts]:
                shutil.rmtree(drop, ignore_errors=True)
                drop.mkdir()
                out = probe.run(first("export", str(drop)))
                into = probe.run(second("import", str(drop)))
                return out, into

            cycle(alpha, bravo)
            cycle(bravo, alpha)
            print("| round | step | changes | SQL statements | per change | folders listed "
                  "| CPU s |")
            print("|---|---|---:|---:|---:|---:|---:|")
            for number in range(1, args.rounds + 1):
                report = mutate_store(source, frac=args.frac, seed=args.seed + number,
                                      renames=0)
                print(report.summary(), file=sys.stderr)
                out, into = cycle(alpha, bravo)
                ack_out, ack_in = cycle(bravo, alpha)
                for step, counts, changes in (("export", out, out.changes),
                                              ("import", into, out.changes),
                                              ("ack export", ack_out, out.changes),
                                              ("ack import", ack_in, out.changes)):
                    per = counts.statements / changes if changes else 0.0
                    print(f"| {number} | {step} | {changes} | {counts.statements} | {per:.1f} "
                          f"| {counts.listings} | {counts.cpu_s:.2f} |")
                    if args.top:
                        for shape, n in counts.shapes.most_common(args.top):
                            print(f"|  |  |  | {n} | | `{shape}` | |", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
