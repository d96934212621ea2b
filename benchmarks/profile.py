"""Where bundlesync's time goes, phase by phase, on one generated store.

    python -m benchmarks.profile --size small [--json] [--passes time,count,strace]

Phases, each one bundlesync command run as a child process, as an
administrator would: ``init`` of the source site (its inventory), the first
``export`` and ``import``, a no-change ``export``, and a 1 % change (made by
``benchmarks.mutate``) exported and imported.

The same sequence runs once per pass, each on a fresh copy of the same store
(the mutation is deterministic, so every pass sees the same changes):

* ``time``: the plain command. Wall and CPU time and peak RSS of the process,
  and its import time (the sum of ``-X importtime``'s self times, through
  ``PYTHONPROFILEIMPORTTIME``).
* ``count``: the command run in-process by :mod:`benchmarks.profile_child`:
  SQL statements (sqlite3's trace callback on every connection) and a
  cProfile, from which the share of time in zstd, crypto, hashing, SQLite and
  the store scan. Slower than the plain command, so only shares are shown.
* ``strace``: ``strace -c -f``: system calls, and fsync, fdatasync and syncfs
  counts. Left out, with a note, when strace is not installed.

The output is a Markdown table for ``docs/performance.md`` ("Where the time
goes"); ``--json`` gives every figure, with the commonest SQL statements and
system calls of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.bundlesync_driver import (
    Bundlesync,
    BundlesyncUnavailableError,
    find_bundlesync,
)
from benchmarks.generate import StoreStats, generate_store
from benchmarks.machine import command_line, describe_machine, header_lines, utc_now
from benchmarks.measure import ChildResult, CommandFailedError, run_child
from benchmarks.mutate import mutate_store
from benchmarks.profile_child import CATEGORIES, OUT_ENV
from benchmarks.progress import Progress, human_bytes, human_seconds
from benchmarks.run import SIZES

PASSES = ("time", "count", "strace")
# Phase -> the name the driver logs its command under.
PHASES: dict[str, str] = {
    "init": "init-alpha",
    "first export": "first-export",
    "first import": "first-import",
    "no-change export": "nochange",
    "1 % export": "change-export",
    "1 % import": "change-import",
}
CHANGE_PHASES = ("1 % export", "1 % import")
SYNC_CALLS = ("fsync", "fdatasync", "syncfs", "sync")
CHILD_CODE = "from benchmarks.profile_child import main; main()"


@dataclass
class PhaseProfile:
    """Every figure of one phase; ``None`` where its pass did not run."""

    phase: str
    per: int  # what "per message" divides by: the store's messages, or the changes
    seconds: float | None = None
    cpu_seconds: float | None = None
    max_rss_kb: int | None = None
    import_seconds: float | None = None
    statements: int | None = None
    top_statements: list[tuple[str, int]] = field(default_factory=list)
    profile_seconds: dict[str, float] = field(default_factory=dict)
    syscalls: int | None = None
    syncs: dict[str, int] = field(default_factory=dict)
    top_syscalls: list[tuple[str, int]] = field(default_factory=list)


# ---------------------------------------------------------------- parsing

def import_seconds(stderr: str) -> float | None:
    """Total of ``-X importtime``'s self column (µs), in seconds; None if there is none."""
    total, seen = 0, False
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:"):].split("|")
        try:
            total += int(fields[0])
        except ValueError:
            continue  # the column header line
        seen = True
    return total / 1e6 if seen else None


def parse_strace_summary(text: str) -> dict[str, int]:
    """Calls per system call from ``strace -c`` output (the ``total`` line dropped).

    Columns are right-aligned under their headers, and "usecs/call" and
    "errors" may be blank, so a value is taken by where its column ends.
    """
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if "calls" in line and "syscall" in line),
                  None)
    if header is None:
        raise ValueError("no strace -c table in the output")
    calls_end = lines[header].index("calls") + len("calls")
    name_start = lines[header].index("syscall")
    counts: dict[str, int] = {}
    for line in lines[header + 1:]:
        if not line.strip() or line.lstrip().startswith("-"):
            continue
        name = line[name_start:].strip()
        value = line[:calls_end].split()[-1] if line[:calls_end].strip() else ""
        if name and name != "total" and value.isdigit():
            counts[name] = counts.get(name, 0) + int(value)
    return counts


# ---------------------------------------------------------------- running

def strace_unusable() -> str | None:
    """None if ``strace -c -f`` works here, else why not (e.g. ptrace forbidden)."""
    if shutil.which("strace") is None:
        return "strace is not installed (Debian: `strace`)"
    probe = subprocess.run(["strace", "-f", "-c", "-o", os.devnull, "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        lines = (probe.stderr.strip() or "no message").splitlines()
        return f"strace does not work here ({lines[-1]})"
    return None


class _Sites(Bundlesync):
    """The benchmark's two sites, each command run the way the pass measures it."""

    def __init__(self, command: list[str], *, work: Path, src_root: Path, mode: str) -> None:
        super().__init__(command, work=work, src_root=src_root)
        self.mode = mode
        if mode == "time":
            self.env["PYTHONPROFILEIMPORTTIME"] = "1"
        elif mode == "count":
            self.command = [sys.executable, "-c", CHILD_CODE]

    def _run(self, args: list[str], name: str, progress: Progress | None = None,
             expected: float | None = None) -> ChildResult:
        env = dict(self.env)
        prefix: list[str] = []
        if self.mode == "count":
            env[OUT_ENV] = str(self.log_dir / f"{name}.json")
        elif self.mode == "strace":
            prefix = ["strace", "-f", "-c", "-o", str(self.log_dir / f"{name}.strace")]
        return run_child([*prefix, *self.command, *args], env=env, log_dir=self.log_dir,
                         name=name, progress=progress, expected=expected)


def run_pass(mode: str, command: list[str], *, pristine: Path, work: Path,
             profiles: dict[str, PhaseProfile], args: argparse.Namespace,
             expected: dict[str, float]) -> int:
    """One pass of the whole sequence on a fresh copy; fills ``profiles``; returns changes."""
    work.mkdir(parents=True)
    src = work / "source"
    subprocess.run(["cp", "-a", str(pristine), str(src)], check=True)
    sites = _Sites(command, work=work, src_root=src, mode=mode)
    progress = Progress(f"pass {mode}", quiet=args.quiet)
    steps = {"init": sites.setup()}
    steps["first export"], steps["first import"] = sites.cycle(
        "first", progress, (expected.get("first export", 0.0), expected.get("first import", 0.0)))
    sites.ack("first")
    steps["no-change export"] = sites.export(sites.home_a, sites.new_drop(), "nochange")
    report = mutate_store(src, frac=args.frac, seed=args.seed + 1, renames=args.renames)
    steps["1 % export"], steps["1 % import"] = sites.cycle("change")
    for phase, step in steps.items():
        profile = profiles[phase]
        log = sites.log_dir / PHASES[phase]
        if mode == "time":
            profile.seconds = step.sample.seconds
            profile.cpu_seconds = step.sample.cpu_seconds
            profile.max_rss_kb = step.sample.max_rss_kb
            profile.import_seconds = import_seconds(
                log.with_suffix(".err").read_text(errors="replace"))
            expected[phase] = step.sample.seconds
        elif mode == "count":
            data = json.loads(log.with_suffix(".json").read_text())
            profile.statements = int(data["statements"])
            profile.top_statements = [(str(s), int(n)) for s, n in data["top_statements"]]
            profile.profile_seconds = {str(k): float(v)
                                       for k, v in data["profile_seconds"].items()}
        else:
            calls = parse_strace_summary(log.with_suffix(".strace").read_text())
            profile.syscalls = sum(calls.values())
            profile.syncs = {name: calls.get(name, 0) for name in SYNC_CALLS}
            profile.top_syscalls = sorted(calls.items(), key=lambda kv: -kv[1])[:10]
    progress.finish(report.summary())
    return report.operations


def profile_store(command: list[str], work: Path, args: argparse.Namespace,
                  passes: list[str]) -> tuple[StoreStats, int, list[PhaseProfile], list[str]]:
    """Generate the store once, run every pass; returns the store, changes, phases, notes."""
    users, folders, messages = SIZES[args.size]
    if args.messages:
        messages = args.messages
    pristine = work / "pristine"
    stats = generate_store(pristine, users=users, folders=folders, messages=messages,
                           seed=args.seed, quiet=args.quiet)
    notes: list[str] = []
    if "strace" in passes:
        why = strace_unusable()
        if why:
            passes = [p for p in passes if p != "strace"]
            notes.append(f"{why}: no system-call counts.")
    profiles = {phase: PhaseProfile(phase, stats.messages) for phase in PHASES}
    expected: dict[str, float] = {}
    changes: set[int] = set()
    for mode in passes:
        pass_dir = work / f"pass-{mode}"
        changes.add(run_pass(mode, command, pristine=pristine, work=pass_dir,
                             profiles=profiles, args=args, expected=expected))
        if not args.keep:
            shutil.rmtree(pass_dir, ignore_errors=True)
    if len(changes) != 1:
        # Cannot happen with the deterministic mutator; say so rather than divide wrongly.
        notes.append(f"the passes saw different 1 % changes: {sorted(changes)}")
    change_count = max(changes)
    for phase in CHANGE_PHASES:
        profiles[phase].per = max(change_count, 1)
    return stats, change_count, list(profiles.values()), notes


# ---------------------------------------------------------------- report

def _share(profile: PhaseProfile, category: str) -> str:
    total = profile.profile_seconds.get("total")
    if not total:
        return "—"
    return f"{100 * profile.profile_seconds.get(category, 0.0) / total:.0f} %"


def _time(value: float | None) -> str:
    return "—" if value is None else human_seconds(value)


def _count(value: int | None, per: int) -> str:
    if value is None:
        return "—"
    return f"{value:,} ({value / per:.1f})"


def render(*, header: list[str], store: StoreStats, changes: int,
           phases: list[PhaseProfile], notes: list[str]) -> str:
    """The Markdown section: the header, one row per phase, how each column is measured."""
    out = [*header, "",
           f"Store: {store.users} user(s), {store.messages:,} messages in {store.folders} "
           f"folders, {human_bytes(store.bytes)}; the 1 % round: {changes:,} changes.", "",
           "| phase | wall | CPU | imports | peak RSS | SQL statements (per message) "
           "| system calls (per message) | fsync | fdatasync | syncfs | "
           + " | ".join(CATEGORIES) + " |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CATEGORIES)]
    for p in phases:
        rss = "—" if p.max_rss_kb is None else f"{p.max_rss_kb / 1024:.0f} MiB"
        syncs = [str(p.syncs[name]) if p.syncs else "—" for name in ("fsync", "fdatasync",
                                                                       "syncfs")]
        label = f"{p.phase} (per change)" if p.phase in CHANGE_PHASES else p.phase
        out.append(f"| {label} | {_time(p.seconds)} | {_time(p.cpu_seconds)} | "
                   f"{_time(p.import_seconds)} | {rss} | {_count(p.statements, p.per)} | "
                   f"{_count(p.syscalls, p.per)} | {' | '.join(syncs)} | "
                   + " | ".join(_share(p, c) for c in CATEGORIES) + " |")
    out += ["",
            "Wall, CPU (user + system) and peak RSS: the plain command, one run. Imports: "
            "the sum of `-X importtime`'s self times. SQL statements: sqlite3's trace "
            "callback on every connection (an `executemany` counts once per row). System "
            "calls and syncs: `strace -c -f`. The last columns: share of the cProfile'd "
            "run spent in zstd, crypto (cryptography), hashing (hashlib), SQLite calls and "
            "the store scan (listing folders and diffing them with the index, its SQL "
            "included), each counted once where they nest. \"Per message\" divides by the "
            "store's messages, for the 1 % phases by the changes."]
    out += [f"- {note}" for note in notes]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--messages", type=int,
                        help="messages per folder instead of the size's (for quick checks)")
    parser.add_argument("--passes", default=",".join(PASSES),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--frac", type=float, default=0.01, help="the change round (0.01)")
    parser.add_argument("--renames", type=int, default=0,
                        help="folder renames in the change round (default 0: per-change "
                             "figures stay per message)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where to work (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--bundlesync", help="command that runs bundlesync (the time and "
                        "strace passes; the count pass runs it in-process)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    passes = [p for p in args.passes.split(",") if p]
    if not passes or set(passes) - set(PASSES):
        parser.error(f"--passes takes a subset of {','.join(PASSES)}")
    args.pass_list = [p for p in PASSES if p in passes]
    if args.messages is not None and args.messages <= 0:
        parser.error("--messages takes a positive whole number")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = find_bundlesync(args.bundlesync)
    if command is None:
        print("bundlesync is not installed and not importable", file=sys.stderr)
        return 2
    date = utc_now()
    work = Path(tempfile.mkdtemp(prefix="bundlesync-profile-", dir=args.workdir))
    try:
        version = Bundlesync(command, work=work, src_root=work).version()
        machine = describe_machine(work, version)
        store, changes, phases, notes = profile_store(command, work, args, args.pass_list)
    except (BundlesyncUnavailableError, CommandFailedError, OSError, ValueError) as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    cmd = command_line("benchmarks.profile", argv)
    if args.json:
        print(json.dumps({"schema": 1, "command": cmd, "date": date, "size": args.size,
                          "machine": machine, "store": store.as_dict(), "changes": changes,
                          "phases": [asdict(p) for p in phases], "notes": notes}, indent=2))
    else:
        print(render(header=header_lines(command=cmd, date=date, machine=machine),
                     store=store, changes=changes, phases=phases, notes=notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
