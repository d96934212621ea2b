"""bundlesync side by side with ``rsync -a`` and ``doveadm backup`` on one generated store.

    python -m benchmarks.run --size small [--runs 3] [--first-runs N] [--messages N]
        [--json] [--keep] [--workdir DIR] [--only rsync,dsync,bundlesync]

Steps (see ``benchmarks/README.md`` for what each figure means):

(a) first full transfer into an empty copy, ``--first-runs`` times (default
    ``--runs``): ``rsync -a``, ``doveadm backup -s ''`` per user (real copies,
    fsync on), bundlesync init + export + import (+ the acknowledgement
    return, timed apart);
(b) no-change runs (``--nochange-runs``, default 5) of each;
(c) ``--runs`` rounds of "mutate the source by 1 % with a fresh seed, then run
    each tool"; rsync also in delta mode (as over ssh) and dsync through a pipe
    to ``doveadm dsync-server`` to count the bytes on the wire;
then a correctness check of every copy against the source.

Progress goes to stderr; the report (Markdown, or JSON with ``--json``) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from benchmarks.bundlesync_driver import (
    Bundlesync,
    BundlesyncUnavailableError,
    Step,
    find_bundlesync,
)
from benchmarks.compare import compare, inventory, listing
from benchmarks.dsync_driver import Dsync, closed_parent, dsync_available
from benchmarks.generate import generate_store
from benchmarks.machine import command_line, describe_machine, utc_now
from benchmarks.measure import CommandFailedError, Sample
from benchmarks.mutate import mutate_store
from benchmarks.progress import Progress, human_bytes, human_seconds
from benchmarks.report import Results, render_markdown
from benchmarks.rsync_driver import rsync_copy

# users, folders per user, messages per folder
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (5, 5, 20),  # 500 messages: for tests and quick checks
    "small": (10, 5, 200),  # 10,000
    "medium": (50, 5, 400),  # 100,000, about 2.5 GB
    "large": (500, 10, 200),  # 1,000,000, about 25 GB: on demand
    "onebig": (1, 1, 100_000),  # one user, 100,000 messages in one folder, about 2.5 GB
}
TOOLS = ("rsync", "dsync", "bundlesync")
AVERAGE_MESSAGE = 25_000  # bytes, to estimate the disk space a size needs
COPIES = 7  # source, rsync x2 (hard-linked), dsync x2, bundlesync copy, bundles

T = TypeVar("T")


def combine(*steps: Step) -> Sample:
    """One sample for consecutive commands: times and CPU add up, memory is the peak."""
    sample = Sample(seconds=sum(s.sample.seconds for s in steps),
                    max_rss_kb=max(s.sample.max_rss_kb for s in steps),
                    cpu_seconds=sum(s.sample.cpu_seconds for s in steps))
    sizes = [s.sample.bytes for s in steps if s.sample.bytes is not None]
    sample.bytes = sum(sizes) if sizes else None
    return sample


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        users, folders, messages = SIZES[args.size]
        if args.messages:
            messages = args.messages
        self.users, self.folders, self.messages = users, folders, messages
        self.src = work / "source"
        self.logs = work / "logs"
        self.only = set(args.only.split(",")) if args.only else set(TOOLS)
        self.results = Results(size=args.size, config={
            "users": users, "folders": folders, "messages": messages, "seed": args.seed,
            "runs": args.runs, "first_runs": args.first_runs,
            "nochange_runs": args.nochange_runs, "frac": args.frac,
            "renames": args.renames, "tools": sorted(self.only),
        })
        self.rsync_on = "rsync" in self.only
        self.dsync: Dsync | None = None
        self.dsync_pipe: Dsync | None = None
        self.bs: Bundlesync | None = None
        self.bs_version: str | None = None

    # ------------------------------------------------------------ helpers
    def note(self, phase: str, text: str) -> None:
        Progress(phase, quiet=self.args.quiet).note(text)

    def expected(self, case: str, series: str) -> float | None:
        last = self.results.last(case, series)
        return last.seconds if last else None

    def _guard_bs(self, what: str, fn: Callable[[], T]) -> T | None:
        """Run a bundlesync step; on failure, report it and leave bundlesync out."""
        try:
            return fn()
        except (CommandFailedError, BundlesyncUnavailableError, OSError) as exc:
            self.results.skipped["bundlesync"] = f"{what} failed: {exc}".replace("\n", " / ")
            self.note("bundlesync", f"{what} failed; bundlesync is left out from here:\n{exc}")
            self.bs = None
            return None

    def _guard_dsync(self, what: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except (CommandFailedError, OSError) as exc:
            self.results.skipped["dsync"] = f"{what} failed: {exc}".replace("\n", " / ")
            self.note("dsync", f"{what} failed; dsync is left out from here:\n{exc}")
            self.dsync = self.dsync_pipe = None
            return None

    # ------------------------------------------------------------ set-up
    def check_tools(self) -> None:
        if self.rsync_on and shutil.which("rsync") is None:
            self.results.skipped["rsync"] = "rsync is not installed"
            self.rsync_on = False
        if "dsync" in self.only:
            why = dsync_available()
            closed = closed_parent(self.work) if why is None else None
            if closed is not None:
                why = (f"{closed} is closed to the vmail user (mode "
                       f"{closed.stat().st_mode & 0o777:04o}): use --workdir in a directory "
                       "others can enter")
            if why:
                self.results.skipped["dsync"] = why
            else:
                self.dsync = Dsync(work=self.work, src_root=self.src, name="dsync")
                self.dsync_pipe = Dsync(work=self.work, src_root=self.src, name="dsync-pipe",
                                        wire=True)
        if "bundlesync" in self.only:
            command = find_bundlesync(self.args.bundlesync)
            if command is None:
                self.results.skipped["bundlesync"] = (
                    "the `bundlesync` command was not found (install the package: "
                    "`pip install -e .`, or pass --bundlesync CMD)")
            else:
                bs = Bundlesync(command, work=self.work, src_root=self.src)
                try:
                    self.bs_version = bs.version()
                except BundlesyncUnavailableError as exc:
                    # Not fatal: set-up (next) says whether bundlesync runs at all.
                    self.bs_version = "unknown (`--version` failed, see the notes)"
                    self.results.notes.append(str(exc).replace("\n", " / "))
                self.bs = bs
        for tool, why in self.results.skipped.items():
            self.note("setup", f"{tool} skipped: {why}")

    def check_space(self) -> None:
        need = self.users * self.folders * self.messages * AVERAGE_MESSAGE * COPIES
        free = shutil.disk_usage(self.work).free
        if free < need:
            raise SystemExit(f"not enough disk space in {self.work}: about "
                             f"{human_bytes(need)} needed, {human_bytes(free)} free "
                             "(use --workdir on a larger file system)")

    def generate(self) -> None:
        owner = "vmail" if self.dsync is not None else None
        stats = generate_store(self.src, users=self.users, folders=self.folders,
                               messages=self.messages, seed=self.args.seed, owner=owner,
                               quiet=self.args.quiet)
        self.results.store = stats.as_dict()

    # ------------------------------------------------------------ (a)
    def first_transfers(self) -> None:
        runs = self.args.first_runs
        for i in range(1, runs + 1):
            phase = f"first transfer {i}/{runs}"
            progress = Progress(phase, quiet=self.args.quiet)
            if self.rsync_on:
                shutil.rmtree(self.work / "rsync", ignore_errors=True)
                s = rsync_copy(self.src, self.work / "rsync", delta=False, log_dir=self.logs,
                               name=f"first-{i}-rsync", progress=progress,
                               expected=self.expected("first", "rsync"))
                self.results.add("first", "rsync", s)
                progress.note(f"rsync {human_seconds(s.seconds)}")
            if self.dsync is not None:
                dsync = self.dsync

                def first_dsync(dsync: Dsync = dsync, i: int = i, phase: str = phase) -> Sample:
                    dsync.reset(wipe_source_index=True)
                    dsync.prepare_keywords()
                    users = Progress(f"{phase}: dsync", total=len(dsync.users()), unit="users",
                                     quiet=self.args.quiet)
                    return dsync.backup_all(f"first-{i}", users)

                ds = self._guard_dsync("first transfer", first_dsync)
                if ds is not None:
                    self.results.add("first", "dsync", ds)
                    progress.note(f"dsync {human_seconds(ds.seconds)}")
            if self.bs is not None:
                self._bs_first(i, progress)
        if self.rsync_on:
            # The delta-mode copy starts as the same mirror; hard links are safe
            # because rsync replaces files by rename, never in place.
            shutil.rmtree(self.work / "rsync-delta", ignore_errors=True)
            subprocess.run(["cp", "-al", str(self.work / "rsync"), str(self.work / "rsync-delta")],
                           check=True)
        if self.dsync_pipe is not None:
            pipe = self.dsync_pipe

            def first_pipe(pipe: Dsync = pipe) -> Sample:
                pipe.reset(wipe_source_index=False)
                users = Progress("first transfer: dsync through a pipe",
                                 total=len(pipe.users()), unit="users", quiet=self.args.quiet)
                return pipe.backup_all("first", users)

            ps = self._guard_dsync("first transfer through a pipe", first_pipe)
            if ps is not None:
                self.results.add("first", "dsync_pipe", ps)

    def _bs_first(self, i: int, progress: Progress) -> None:
        bs = self.bs
        assert bs is not None
        expected = (self.expected("first", "bundlesync_export") or 0.0,
                    self.expected("first", "bundlesync_import") or 0.0)

        def go() -> tuple[Step, Step, Step, tuple[Step, Step]]:
            init = bs.setup()
            exp, imp = bs.cycle(f"first-{i}", progress, expected)
            return init, exp, imp, bs.ack(f"first-{i}")

        done = self._guard_bs("first transfer", go)
        if done is None:
            return
        init, exp, imp, ack = done
        self.results.add("first", "bundlesync", combine(init, exp, imp))
        self.results.add("first", "bundlesync_init", init.sample)
        self.results.add("first", "bundlesync_export", exp.sample)
        self.results.add("first", "bundlesync_import", imp.sample)
        self.results.add("first", "bundlesync_ack", combine(*ack))
        self._bs_complaints(f"first transfer {i}", imp.report)
        progress.note(f"bundlesync init {human_seconds(init.sample.seconds)}, export "
                      f"{human_seconds(exp.sample.seconds)} "
                      f"({human_bytes(float(exp.sample.bytes or 0))}), import "
                      f"{human_seconds(imp.sample.seconds)}")

    # ------------------------------------------------------------ (b), (c)
    def incremental(self, case: str, label: str, run: int) -> dict[str, object]:
        """Run every tool once on the current source; returns a per-run row."""
        row: dict[str, object] = {}
        progress = Progress(label, quiet=self.args.quiet)
        if self.rsync_on:
            s = rsync_copy(self.src, self.work / "rsync", delta=False, log_dir=self.logs,
                           name=f"{case}-{run}-rsync")
            self.results.add(case, "rsync", s)
            d = rsync_copy(self.src, self.work / "rsync-delta", delta=True, log_dir=self.logs,
                           name=f"{case}-{run}-rsync-delta")
            self.results.add(case, "rsync_delta", d)
            row.update(rsync_s=s.seconds, rsync_delta_s=d.seconds, rsync_delta_bytes=d.bytes)
        for tool in (self.dsync, self.dsync_pipe):
            if tool is None:
                continue
            series = "dsync" if tool is self.dsync else "dsync_pipe"

            def go(tool: Dsync = tool) -> Sample:
                return tool.backup_all(f"{case}-{run}")

            ds = self._guard_dsync(f"{case} run", go)
            if ds is not None:
                self.results.add(case, series, ds)
                row[f"{series}_s"] = ds.seconds
                if ds.bytes is not None:
                    row[f"{series}_bytes"] = ds.bytes
        if self.bs is not None:
            bs = self.bs
            done = self._guard_bs(f"{case} run", lambda: (bs.cycle(f"{case}-{run}"),
                                                          bs.ack(f"{case}-{run}")))
            if done is not None:
                (exp, imp), ack = done
                self.results.add(case, "bundlesync", combine(exp, imp))
                self.results.add(case, "bundlesync_export", exp.sample)
                self.results.add(case, "bundlesync_import", imp.sample)
                self.results.add(case, "bundlesync_ack", combine(*ack))
                row.update(bundlesync_s=exp.sample.seconds + imp.sample.seconds,
                           bundlesync_bytes=exp.sample.bytes,
                           bundlesync_import=imp.report.get("changes"))
                self._bs_complaints(label, imp.report)
        parts = [f"{k[:-2]} {human_seconds(float(v))}" for k, v in row.items()  # type: ignore[arg-type]
                 if k.endswith("_s")]
        progress.note(", ".join(parts) or "nothing to run")
        return row

    def _bs_complaints(self, label: str, report: dict[str, object]) -> None:
        """Put what bundlesync's import itself says went wrong into the notes."""
        changes = report.get("changes")
        if not isinstance(changes, dict):
            return
        for key in ("missing_bodies", "failures", "warnings"):
            value = changes.get(key)
            if value:
                text = json.dumps(value, ensure_ascii=False)
                self.results.notes.append(f"{label}: bundlesync import reported {key}: "
                                          f"{text[:500]}")
                self.note(label, f"bundlesync import reported {key}: {text[:200]}")

    def no_change_runs(self) -> None:
        n = self.args.nochange_runs
        for i in range(1, n + 1):
            self.incremental("nochange", f"no change {i}/{n}", i)

    def change_rounds(self) -> None:
        runs = self.args.runs
        changed = 0
        for i in range(1, runs + 1):
            label = f"1% round {i}/{runs}"
            report = mutate_store(self.src, frac=self.args.frac, seed=self.args.seed * 1000 + i,
                                  renames=self.args.renames)
            self.note(label, report.summary())
            if self.dsync is not None:
                # Shared by both dsync destinations: it describes the source.
                self.dsync.apply_renames(report.renames)
                self.dsync.prepare_keywords()
            before = listing(self.src) if self.bs is not None else None
            row = self.incremental("change", label, i)
            if before is not None and self.bs is not None:
                changed += len(before ^ listing(self.src))
            row.update(operations=report.operations,
                       new_bytes=report.delivered_bytes + report.moved_bytes,
                       renamed=f"{len(report.renames)} dirs ({report.renamed_messages})",
                       mutation=report.as_dict())
            self.results.rounds.append(row)
        if self.bs is not None:
            self.results.source_changed_by_bundlesync = changed

    # ------------------------------------------------------------ correctness
    def check_copies(self) -> None:
        progress = Progress("compare: source", unit="msgs", quiet=self.args.quiet)
        source = inventory(self.src, progress)
        progress.finish(f"{sum(source.values()):,} messages")
        copies = {"rsync -a": self.work / "rsync", "rsync delta mode": self.work / "rsync-delta",
                  "doveadm backup": self.work / "dsync",
                  "doveadm backup (pipe)": self.work / "dsync-pipe"}
        if self.bs is not None:
            copies["bundlesync"] = self.bs.store_b
        for name, root in copies.items():
            if not root.exists():
                continue
            copy_progress = Progress(f"compare: {name}", unit="msgs", quiet=self.args.quiet)
            inv = inventory(root, copy_progress)
            copy_progress.finish(f"{sum(inv.values()):,} messages")
            mismatch = compare(source, inv)
            self.results.correctness[name] = {"messages": sum(inv.values()),
                                              "missing": mismatch.missing,
                                              "extra": mismatch.extra}
        self.results.correctness = {"source": {"messages": sum(source.values()), "missing": "",
                                               "extra": ""}, **self.results.correctness}

    # ------------------------------------------------------------ all
    def run(self) -> Results:
        started = time.monotonic()
        self.check_space()
        self.check_tools()
        self.generate()
        self.results.machine = describe_machine(self.work, self.bs_version)
        self.first_transfers()
        self.no_change_runs()
        self.change_rounds()
        self.check_copies()
        self.results.run_seconds = time.monotonic() - started
        load = os.getloadavg()
        self.results.machine["load average at end"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        self.results.notes.extend([
            "rsync does not fsync; doveadm backup fsyncs (Dovecot default); bundlesync as "
            "configured by default.",
            "dsync copies for real (`maildir_copy_with_hardlinks = no`); the source's "
            "INDEX/CONTROL are kept outside its Maildir and follow folder renames.",
            "bundlesync's first transfer includes `init` of the source site (its store "
            "inventory); export and import are each one process.",
        ])
        return self.results


def prepare_workdir(path: Path | None) -> Path:
    if path is None:
        work = Path(tempfile.mkdtemp(prefix="bundlesync-bench-"))
    else:
        work = path
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            raise SystemExit(f"--workdir {work} is not empty")
    # vmail (dsync) must be able to traverse it.
    work.chmod(0o755)
    return work


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--runs", type=int, default=3,
                        help="first transfers and 1%% rounds (default 3)")
    parser.add_argument("--first-runs", type=int,
                        help="first transfers only (default: --runs); the longest step")
    parser.add_argument("--messages", type=int,
                        help="messages per folder instead of the size's (e.g. a smaller onebig)")
    parser.add_argument("--nochange-runs", type=int, default=5, help="(default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--workdir", type=Path, help="where to work (default: a new temp dir)")
    parser.add_argument("--only", help="comma-separated subset of rsync,dsync,bundlesync")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frac", type=float, default=0.01, help="change per round (0.01)")
    parser.add_argument("--renames", type=int, default=1, help="folder renames per round (1)")
    parser.add_argument("--bundlesync", help="command to run bundlesync (default: found)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(TOOLS)
        if unknown:
            parser.error(f"--only: unknown tool(s) {', '.join(sorted(unknown))}")
    if args.first_runs is None:
        args.first_runs = args.runs
    if min(args.runs, args.first_runs, args.nochange_runs) < 1:
        parser.error("--runs, --first-runs and --nochange-runs must be at least 1")
    if args.messages is not None and args.messages < 1:
        parser.error("--messages takes a positive whole number")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    date = utc_now()
    work = prepare_workdir(args.workdir)
    try:
        results = Bench(args, work).run()
        results.command = command_line("benchmarks.run", argv)
        results.date = date
        markdown = render_markdown(results)
        (work / "logs").mkdir(exist_ok=True)
        (work / "logs" / "report.md").write_text(markdown)
        (work / "logs" / "results.json").write_text(json.dumps(results.as_json(), indent=2))
        print(json.dumps(results.as_json(), indent=2) if args.json else markdown)
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
