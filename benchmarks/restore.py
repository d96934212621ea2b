"""Restoring one user's mail: bundlesync beside restic and borg restoring the same files.

    python -m benchmarks.restore --size medium            # Markdown table on stdout
    python -m benchmarks.restore --size tiny --runs 1     # a quick check

One store is generated (the sizes of ``benchmarks.run``) and backed up whole by
each tool, encrypted and compressed: ``bundlesync backup``, ``restic backup``,
``borg create``. Then one user's mail is restored from each, ``--runs`` times,
into an empty directory:

* bundlesync ``restore --at latest --user U --into DIR`` (exact: GUIDs, UIDs);
* bundlesync ``restore --beside`` into a copy of the user's live Maildir from
  which a tenth of the messages were deleted (only those come back);
* ``restic restore latest --include <user dir>``;
* ``borg extract <archive> <user dir>``.

Every restore is checked: the number of message files that came back. Warm page
cache; bundlesync makes every restored message durable (fsync), restic and borg
do not. Needs ``restic`` and ``borg`` on PATH (Debian: ``restic``, ``borgbackup``);
a missing tool is left out with a note.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.bundlesync_driver import compile_checkout, find_bundlesync
from benchmarks.generate import generate_store, user_address
from benchmarks.machine import _first_line, describe_machine
from benchmarks.measure import CommandFailedError, Sample, run_child, summarize
from benchmarks.progress import Progress, human_bytes
from benchmarks.run import SIZES

SECRET = "benchmark passphrase"  # throwaway repositories


def message_files(root: Path) -> int:
    """Message files (in cur/ or new/) below ``root``."""
    return sum(len(files) for directory, _, files in os.walk(root)
               if os.path.basename(directory) in ("cur", "new"))


def tree_bytes(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(root)
               for f in files)


class RestoreBench:
    """One work directory: the store, three repositories, and the measurements."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.src = work / "source"
        self.logs = work / "logs"
        self.env = dict(os.environ, RESTIC_PASSWORD=SECRET, BORG_PASSPHRASE=SECRET,
                        BUNDLESYNC_PASSPHRASE=SECRET, BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        # An installed bundlesync has its bytecode compiled; do not make it compile
        # its sources on every run because this shell forbids writing bytecode.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        compile_checkout()
        self.samples: dict[str, list[Sample]] = {}
        self.backup_seconds: dict[str, float] = {}
        self.repo_bytes: dict[str, int] = {}
        self.notes: list[str] = []
        self.count = 0

    def run(self, name: str, cmd: list[str], *, cwd: Path | None = None) -> Sample:
        self.count += 1
        result = run_child(cmd, env=self.env, cwd=cwd, log_dir=self.logs,
                           name=f"{self.count:03d}-{name}")
        return result.sample()

    def prepare(self) -> tuple[str, Path]:
        users, folders, messages = SIZES[self.args.size]
        domain, login = user_address(0)
        if self.args.reuse:
            return f"{login}@{domain}", self.src / domain / login
        generate_store(self.src, users=users, folders=folders, messages=messages,
                       seed=self.args.seed, quiet=self.args.quiet)
        domain, login = user_address(0)
        return f"{login}@{domain}", self.src / domain / login

    def backups(self, bundlesync: list[str] | None) -> None:
        progress = Progress("backups", quiet=self.args.quiet)
        if bundlesync is not None:
            home = self.work / "bs-home"
            self.run("bs-init", [*bundlesync, "--home", str(home), "init", "--site", "bench",
                                 "--store", f"{self.src}/%d/%n/Maildir"])
            sample = self.run("bs-backup", [*bundlesync, "--home", str(home), "backup",
                                            str(self.work / "bs-archive"), "--no-recovery-key"])
            self.backup_seconds["bundlesync"] = sample.seconds
            self.repo_bytes["bundlesync"] = tree_bytes(self.work / "bs-archive")
        if shutil.which("restic"):
            repo = self.work / "restic-repo"
            self.run("restic-init", ["restic", "-r", str(repo), "init",
                                     "--repository-version", "2"])
            sample = self.run("restic-backup", ["restic", "-r", str(repo), "backup",
                                                str(self.src)])
            self.backup_seconds["restic"] = sample.seconds
            self.repo_bytes["restic"] = tree_bytes(repo)
        else:
            self.notes.append("restic is not installed: left out")
        if shutil.which("borg"):
            repo = self.work / "borg-repo"
            self.run("borg-init", ["borg", "init", "--encryption=repokey-blake2", str(repo)])
            # From inside the store, so that paths in the archive start at the domain.
            sample = self.run("borg-backup", ["borg", "create", "--compression", "zstd,3",
                                              f"{repo}::s1", "."], cwd=self.src)
            self.backup_seconds["borg"] = sample.seconds
            self.repo_bytes["borg"] = tree_bytes(repo)
        else:
            self.notes.append("borg is not installed: left out")
        progress.finish("done")

    def restores(self, bundlesync: list[str] | None, user: str, user_dir: Path) -> int:
        expected = message_files(user_dir)
        relative = user_dir.relative_to(self.src)
        for number in range(self.args.runs):
            progress = Progress(f"restore run {number + 1}", quiet=self.args.quiet)
            if bundlesync is not None:
                target = self.fresh(f"bs-into-{number}")
                self.measure("bundlesync --into", expected, target, [
                    *bundlesync, "--home", str(self.work / "bs-home"), "restore",
                    str(self.work / "bs-archive"), "--at", "latest", "--user", user,
                    "--into", f"{target}/%d/%n/Maildir"])
                live = self.fresh(f"bs-beside-{number}")
                shutil.copytree(self.src / relative.parts[0] / relative.parts[1],
                                live / relative.parts[0] / relative.parts[1], symlinks=True)
                deleted = self.delete_tenth(live / relative)
                before = message_files(live)
                sample = self.run("bs-beside", [
                    *bundlesync, "--home", str(self.work / "bs-home"), "restore",
                    str(self.work / "bs-archive"), "--at", "latest", "--user", user,
                    "--beside", "--store", f"{live}/%d/%n/Maildir"])
                self.check("bundlesync --beside", message_files(live) - before, deleted)
                self.samples.setdefault("bundlesync --beside (10% missing)", []).append(sample)
                shutil.rmtree(live)
            if shutil.which("restic"):
                target = self.fresh(f"restic-{number}")
                self.measure("restic restore", expected, target, [
                    "restic", "-r", str(self.work / "restic-repo"), "restore", "latest",
                    "--target", str(target), "--include", str(user_dir)])
            if shutil.which("borg"):
                target = self.fresh(f"borg-{number}")
                self.measure("borg extract", expected, target, [
                    "borg", "extract", f"{self.work / 'borg-repo'}::s1", str(relative)],
                    cwd=target)
            progress.finish("done")
        return expected

    def fresh(self, name: str) -> Path:
        target = self.work / "restores" / name
        target.mkdir(parents=True)
        return target

    def measure(self, label: str, expected: int, target: Path, cmd: list[str],
                *, cwd: Path | None = None) -> None:
        sample = self.run(label.split(maxsplit=1)[0], cmd, cwd=cwd)
        self.check(label, message_files(target), expected)
        self.samples.setdefault(label, []).append(sample)
        shutil.rmtree(target)

    def check(self, label: str, found: int, expected: int) -> None:
        if found != expected:
            raise SystemExit(f"{label} restored {found} message files, expected {expected}")

    @staticmethod
    def delete_tenth(maildir: Path) -> int:
        deleted = 0
        for directory, _, files in sorted(os.walk(maildir)):
            if os.path.basename(directory) not in ("cur", "new"):
                continue
            for name in sorted(files)[::10]:
                os.unlink(os.path.join(directory, name))
                deleted += 1
        return deleted

    def report(self, user: str, user_dir: Path, messages: int) -> str:
        users, folders, per_folder = SIZES[self.args.size]
        lines = [
            f"## Restoring one user ({self.args.size} store: {users} users x {folders} folders "
            f"x {per_folder} messages)",
            "",
            f"User {user}: {messages:,} messages, {human_bytes(tree_bytes(user_dir))}; "
            f"the whole store {human_bytes(tree_bytes(self.src))}. "
            f"{self.args.runs} run(s) each, warm cache.",
            "",
            # On a shared machine wall time swings with the load; CPU time (user +
            # system, of the process and its children) much less: both are shown.
            "| restore | median | min-max | vs restic | CPU median | CPU vs restic "
            "| peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        restic_samples = self.samples.get("restic restore", [])
        restic = summarize([s.seconds for s in restic_samples])
        restic_cpu = summarize([s.cpu_seconds for s in restic_samples])
        for label, samples in self.samples.items():
            summary = summarize([s.seconds for s in samples])
            cpu = summarize([s.cpu_seconds for s in samples])
            assert summary is not None and cpu is not None
            ratio = f"{summary.median / restic.median:.2f}x" if restic else "-"
            cpu_ratio = (f"{cpu.median / restic_cpu.median:.2f}x"
                         if restic_cpu and restic_cpu.median else "-")
            rss = max(s.max_rss_kb for s in samples) / 1024
            lines.append(f"| {label} | {summary.median:.2f} s | {summary.low:.2f}-"
                         f"{summary.high:.2f} s | {ratio} | {cpu.median:.2f} s | {cpu_ratio} "
                         f"| {rss:.0f} MB |")
        if self.backup_seconds:  # not measured with --reuse
            lines += ["", "| whole-store backup (once) | time | repository |", "|---|---|---|"]
        for tool, seconds in self.backup_seconds.items():
            lines.append(f"| {tool} | {seconds:.1f} s | {human_bytes(self.repo_bytes[tool])} |")
        lines += [f"- {note}" for note in self.notes]
        machine = describe_machine(self.work, None)
        machine.pop("bundlesync", None)
        lines += ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items())]
        lines.append("restic: " + _first_line(["restic", "version"]) + "; borg: "
                     + _first_line(["borg", "--version"]))
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restore",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--reuse", action="store_true",
                        help="restore from the store and repositories a previous run left in "
                        "--workdir (with --keep), without generating or backing up again; "
                        "the directory is kept")
    parser.add_argument("--bundlesync", help="the command that runs bundlesync")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bs-restore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = RestoreBench(args, work)
    command = find_bundlesync(args.bundlesync)
    if command is None:
        bench.notes.append("bundlesync cannot be run here: left out")
    try:
        user, user_dir = bench.prepare()
        if not args.reuse:
            bench.backups(command)
        messages = bench.restores(command, user, user_dir)
        sys.stdout.write(bench.report(user, user_dir, messages))
    except CommandFailedError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    finally:
        if not (args.keep or args.reuse):  # a reused work directory is never removed
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
