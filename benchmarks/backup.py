"""bundlesync backups side by side with restic and borg on one generated store.

    python -m benchmarks.backup --size small [--nochange-runs 3] [--change-runs 2]
        [--only bundlesync,restic,borg] [--json] [--keep] [--workdir DIR]

Steps, each tool on the same store in the same run (see ``docs/performance.md``):

1. first backup into an empty archive / repository;
2. no-change backups (``--nochange-runs``);
3. rounds of "mutate the store by 1 % with a fresh seed, then back up with each
   tool" (``--change-runs``): time and archive growth;
4. ``check`` (structure) and ``check --read-data`` (restic), ``check
   --verify-data`` (borg);
5. one user's mailbox out of the newest snapshot: ``restic restore --include``,
   ``borg extract`` of that user's directory, and for bundlesync every message of
   that user read and verified from the archive (the restore command itself is
   built separately; this measures the archive side of it).

restic and borg: Debian packages ``restic`` and ``borgbackup``; a tool that is
missing is left out with a note. borg uses ``--compression zstd,3`` and repokey
encryption; restic its defaults (repository v2, zstd ``auto``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bundlesync_driver import compile_checkout, find_bundlesync
from benchmarks.generate import generate_store
from benchmarks.machine import describe_machine
from benchmarks.measure import CommandFailedError, run_child
from benchmarks.mutate import mutate_store
from benchmarks.run import SIZES

PASSWORD = "benchmark passphrase"
TOOLS = ("bundlesync", "restic", "borg")


@dataclass
class Row:
    """One measured case: seconds (and bytes) per tool."""

    case: str
    seconds: dict[str, float] = field(default_factory=dict)
    # user + system CPU of the command and its children: on a shared machine the
    # fairer ratio (wall time also counts waiting for other jobs' CPU).
    cpu: dict[str, float] = field(default_factory=dict)
    rss_kb: dict[str, int] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)


def du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


class Bench:
    def __init__(self, work: Path, tools: list[str]) -> None:
        self.work = work
        self.logs = work / "logs"
        self.store = work / "store"
        self.tools = tools
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.counter = 0
        env = dict(os.environ)
        env.update(BUNDLESYNC_HOME=str(work / "bs-home"), BUNDLESYNC_PASSPHRASE=PASSWORD,
                   RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(work / "restic-cache"),
                   BORG_PASSPHRASE=PASSWORD, BORG_BASE_DIR=str(work / "borg-base"),
                   BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                   BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        # An installed bundlesync runs from compiled bytecode: a shell that forbids
        # writing it would make every measured run compile the modules it imports.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        compile_checkout()
        self.env = env
        command = find_bundlesync(None)
        assert command is not None
        self.bundlesync = command
        self.archive = {"bundlesync": work / "bs-archive", "restic": work / "restic-repo",
                        "borg": work / "borg-repo"}

    def run(self, tool: str, cmd: list[str], *, cwd: Path | None = None
            ) -> tuple[float, int, float]:
        self.counter += 1
        result = run_child(cmd, env=self.env, cwd=cwd, log_dir=self.logs,
                           name=f"{self.counter:03d}-{tool}")
        return result.seconds, result.max_rss_kb, result.cpu_seconds

    def backup_cmd(self, tool: str) -> list[str]:
        self.counter += 0
        if tool == "bundlesync":
            return [*self.bundlesync, "backup", str(self.archive[tool]), "--json"]
        if tool == "restic":
            return ["restic", "--repo", str(self.archive[tool]), "backup", "--quiet",
                    str(self.store)]
        return ["borg", "create", "--compression", "zstd,3",
                f"{self.archive[tool]}::b{self.counter}", str(self.store)]

    def case(self, name: str, commands: Callable[[str], list[str]], *,
             growth: bool = False, cwd: Callable[[str], Path | None] | None = None) -> None:
        row = Row(name)
        for tool in self.tools:
            before = du(self.archive[tool]) if growth else 0
            seconds, rss, cpu = self.run(tool, commands(tool), cwd=cwd(tool) if cwd else None)
            row.seconds[tool], row.rss_kb[tool], row.cpu[tool] = seconds, rss, cpu
            if growth:
                row.size[tool] = du(self.archive[tool]) - before
        self.rows.append(row)
        print(f"  {name}: " + ", ".join(f"{t} {s:.2f} s (CPU {row.cpu[t]:.2f} s)"
                                        for t, s in row.seconds.items()), file=sys.stderr)

    def setup(self) -> None:
        if "bundlesync" in self.tools:
            self.run("bundlesync", [*self.bundlesync, "init", "--site", "bench", "--store",
                                    f"{self.store}/%d/%n/Maildir", "--json"])
        if "restic" in self.tools:
            self.run("restic", ["restic", "--repo", str(self.archive["restic"]), "init"])
        if "borg" in self.tools:
            self.run("borg", ["borg", "init", "--encryption", "repokey",
                              str(self.archive["borg"])])

    def one_user(self) -> tuple[str, str]:
        domain = sorted(p.name for p in self.store.iterdir())[0]
        user = sorted(p.name for p in (self.store / domain).iterdir())[0]
        return domain, user

    def restore_cmd(self, tool: str) -> list[str]:
        domain, user = self.one_user()
        target = self.work / f"restore-{tool}-{self.counter}"
        target.mkdir()
        if tool == "bundlesync":
            return [sys.executable, "-m", "benchmarks.backup_read_user", str(self.archive[tool]),
                    f"{user}@{domain}"]
        if tool == "restic":
            return ["restic", "--repo", str(self.archive[tool]), "restore", "latest",
                    "--target", str(target), "--include", str(self.store / domain / user)]
        last = run_child(["borg", "list", "--short", "--last", "1", str(self.archive[tool])],
                         env=self.env, log_dir=self.logs, name="borg-list").stdout.strip()
        return ["borg", "extract", f"{self.archive[tool]}::{last}",
                str(self.store / domain / user).lstrip("/")]

    def restore_dir(self, tool: str) -> Path:
        return self.work / f"restore-{tool}-{self.counter}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--nochange-runs", type=int, default=3)
    parser.add_argument("--change-runs", type=int, default=2)
    parser.add_argument("--only", default=",".join(TOOLS))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    wanted = [t for t in args.only.split(",") if t]
    tools = [t for t in wanted if t == "bundlesync" or shutil.which(t)]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bundlesync-backup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work, tools)
    bench.notes += [f"{t} is not installed: left out" for t in wanted if t not in tools]
    users, folders, messages = SIZES[args.size]
    try:
        print(f"generating the {args.size} store ...", file=sys.stderr)
        stats = generate_store(bench.store, users=users, folders=folders, messages=messages,
                               seed=1, quiet=True)
        bench.setup()
        bench.case("first backup", bench.backup_cmd, growth=True)
        for run in range(args.nochange_runs):
            bench.case(f"no-change backup #{run + 1}", bench.backup_cmd, growth=True)
        for run in range(args.change_runs):
            mutate_store(bench.store, frac=0.01, seed=100 + run)
            bench.case(f"1 % change backup #{run + 1}", bench.backup_cmd, growth=True)
        bench.case("check (structure)", lambda t: {
            "bundlesync": [*bench.bundlesync, "check", str(bench.archive[t])],
            "restic": ["restic", "--repo", str(bench.archive[t]), "check"],
            "borg": ["borg", "check", "--repository-only", str(bench.archive[t])],
        }[t])
        bench.case("check, reading all data", lambda t: {
            "bundlesync": [*bench.bundlesync, "check", "--read-data", str(bench.archive[t])],
            "restic": ["restic", "--repo", str(bench.archive[t]), "check", "--read-data"],
            "borg": ["borg", "check", "--verify-data", str(bench.archive[t])],
        }[t])
        bench.case("one user's mailbox out of the newest snapshot", bench.restore_cmd,
                   cwd=lambda t: bench.restore_dir(t) if t == "borg" else None)
        sizes = {t: du(bench.archive[t]) for t in tools}
        machine = describe_machine(work, None)
        versions = {"restic": ["restic", "version"], "borg": ["borg", "--version"]}
        for tool in tools:
            if tool in versions:
                out = run_child(versions[tool], log_dir=bench.logs, name=f"version-{tool}",
                                check=False).stdout.strip()
                machine[tool] = out.splitlines()[0] if out else "unknown"
    except CommandFailedError as exc:
        print(f"a command failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {"size": args.size, "store": stats.as_dict(), "machine": machine,
              "tools": tools, "notes": bench.notes, "archive_bytes": sizes,
              "rows": [{"case": r.case, "seconds": r.seconds, "cpu_seconds": r.cpu,
                        "max_rss_kb": r.rss_kb, "growth_bytes": r.size}
                       for r in bench.rows]}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render(report))
    return 0


def render(report: dict[str, object]) -> str:
    tools = list(report["tools"])  # type: ignore[call-overload]
    lines = [f"store: {report['store']}", "",
             "| case | " + " | ".join(tools) + " | restic / bundlesync | "
             "borg / bundlesync | same, CPU time: restic | borg |",
             "|---|" + "---:|" * (len(tools) + 4)]
    for row in report["rows"]:  # type: ignore[attr-defined]
        secs = row["seconds"]
        cells = [f"{secs[t]:.2f} s" + (f" (+{row['growth_bytes'][t] / 1e6:.2f} MB)"
                                       if row["growth_bytes"] else "") for t in tools]
        cpu = row.get("cpu_seconds", {})
        ratios = [f"{secs[o] / secs['bundlesync']:.1f}x" if o in secs and "bundlesync" in secs
                  and secs["bundlesync"] > 0 else "" for o in ("restic", "borg")]
        ratios += [f"{cpu[o] / cpu['bundlesync']:.1f}x" if o in cpu and cpu.get("bundlesync")
                   else "" for o in ("restic", "borg")]
        lines.append(f"| {row['case']} | " + " | ".join(cells + ratios) + " |")
    sizes = report["archive_bytes"]
    lines.append("| archive size at the end | " + " | ".join(
        f"{sizes[t] / 1e6:.1f} MB" for t in tools) + " | | | | |")  # type: ignore[index]
    peaks = {t: max(r["max_rss_kb"].get(t, 0) for r in report["rows"]) for t in tools}  # type: ignore[attr-defined]
    lines.append("| peak RSS | " + " | ".join(f"{peaks[t] / 1024:.0f} MB" for t in tools)
                 + " | | | | |")
    for note in report["notes"]:  # type: ignore[attr-defined]
        lines.append(f"\nnote: {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
