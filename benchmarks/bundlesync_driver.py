"""bundlesync driven through its command line, as an administrator would run it.

Two sites on this machine: ``alpha`` reads the generated store, ``bravo``
writes into an empty copy root. A cycle is "alpha exports into a fresh drop
directory, bravo imports it"; the acknowledgement return is "bravo exports,
alpha imports". Every command is a child process, so its wall time, peak RSS
and CPU time are measured on their own.
"""

from __future__ import annotations

import compileall
import importlib.util
import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import ChildResult, CommandFailedError, Sample, run_child
from benchmarks.progress import Progress

REPO_ROOT = Path(__file__).resolve().parent.parent


class BundlesyncUnavailableError(RuntimeError):
    """bundlesync cannot be benchmarked here; the message says why."""


def find_bundlesync(explicit: str | None) -> list[str] | None:
    """The command that runs bundlesync: given, on PATH, or ``python -m bundlesync``."""
    if explicit:
        return shlex.split(explicit)
    found = shutil.which("bundlesync")
    if found:
        return [found]
    if importlib.util.find_spec("bundlesync") is not None:
        return [sys.executable, "-m", "bundlesync"]
    return None


def compile_checkout() -> None:
    """Write the bytecode of bundlesync when it runs from this checkout.

    Done before anything is timed, so the first measured command does not pay
    for compiling the modules it imports (the later ones would not).
    """
    package = REPO_ROOT / "bundlesync"
    if package.is_dir() and os.access(package, os.W_OK):
        compileall.compile_dir(package, quiet=1)


@dataclass
class Step:
    """One bundlesync command's measurement and what it reported."""

    sample: Sample
    report: dict[str, object]


def _drop_size(drop: Path, report: dict[str, object]) -> int:
    """Bytes of the bundles written (the key card beside them is not counted)."""
    bundles = report.get("bundles")
    if isinstance(bundles, list) and all(
            isinstance(b, dict) and isinstance(b.get("size"), int) for b in bundles):
        return sum(int(b["size"]) for b in bundles)
    # No usable --json: count the bundle files in the drop.
    return sum(p.stat().st_size for p in drop.rglob("*.bsb") if p.is_file())


class Bundlesync:
    """Two bundlesync sites and the drops between them."""

    def __init__(self, command: list[str], *, work: Path, src_root: Path) -> None:
        self.command = command
        self.work = work / "bundlesync"
        self.src_root = src_root
        self.home_a = self.work / "alpha"
        self.home_b = self.work / "bravo"
        self.store_b = work / "bundlesync-copy"
        self.drops = self.work / "drops"
        self.log_dir = work / "logs" / "bundlesync"
        self.failed: str | None = None
        self._drop_count = 0
        # For long commands: a progress line while they run, and the time each is
        # expected to take (by its log name) for an ETA.
        self.progress: Progress | None = None
        self.expected: dict[str, float] = {}
        # Let ``python -m bundlesync`` find the package when run from a checkout.
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env.pop("BUNDLESYNC_HOME", None)
        # An installed bundlesync runs from compiled bytecode. With writing it
        # forbidden (some shells and CI set this), a checkout would compile every
        # module it imports in every measured command: about 0.2 s each.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        compile_checkout()

    def _run(self, args: list[str], name: str, progress: Progress | None = None,
             expected: float | None = None) -> ChildResult:
        return run_child([*self.command, *args], env=self.env, log_dir=self.log_dir, name=name,
                         progress=progress or self.progress,
                         expected=expected or self.expected.get(name))

    def version(self) -> str:
        try:
            return self._run(["--version"], "version").stdout.strip().splitlines()[-1]
        except (CommandFailedError, OSError) as exc:
            raise BundlesyncUnavailableError(f"`{shlex.join(self.command)} --version` failed: "
                                        f"{exc}") from exc

    def setup(self) -> Step:
        """Fresh sites and an empty copy; returns the timed ``init`` of alpha.

        ``init`` takes the inventory of the store, which is part of the cost of
        a first transfer; the other set-up commands are not timed.
        """
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.store_b, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.store_b.mkdir(parents=True)
        self.drops.mkdir()
        self._drop_count = 0
        try:
            init_a = self._run(["--home", str(self.home_a), "init", "--site", "alpha",
                                "--store", f"{self.src_root}/%d/%n/Maildir", "--json"],
                               "init-alpha")
            self._run(["--home", str(self.home_b), "init", "--site", "bravo",
                       "--store", f"{self.store_b}/%d/%n/Maildir", "--json"], "init-bravo")
            card_a, card_b = self.work / "alpha.card", self.work / "bravo.card"
            self._run(["--home", str(self.home_a), "key", "export", str(card_a)], "key-alpha")
            self._run(["--home", str(self.home_b), "key", "export", str(card_b)], "key-bravo")
            self._run(["--home", str(self.home_a), "peer", "add", "bravo", str(card_b), "--yes"],
                      "peer-alpha")
            self._run(["--home", str(self.home_b), "peer", "add", "alpha", str(card_a), "--yes"],
                      "peer-bravo")
        except (CommandFailedError, OSError) as exc:
            raise BundlesyncUnavailableError(f"setting up two sites failed: {exc}") from exc
        return Step(init_a.sample(), _json(init_a))

    def new_drop(self) -> Path:
        self._drop_count += 1
        drop = self.drops / f"drop-{self._drop_count:04d}"
        drop.mkdir()
        return drop

    def export(self, home: Path, drop: Path, name: str, progress: Progress | None = None,
               expected: float | None = None) -> Step:
        result = self._run(["--home", str(home), "export", str(drop), "--json"], name,
                           progress, expected)
        report = _json(result)
        sample = result.sample()
        sample.bytes = _drop_size(drop, report)
        return Step(sample, report)

    def import_(self, home: Path, drop: Path, name: str, progress: Progress | None = None,
                expected: float | None = None) -> Step:
        result = self._run(["--home", str(home), "import", str(drop), "--json"], name,
                           progress, expected)
        return Step(result.sample(), _json(result))

    def cycle(self, name: str, progress: Progress | None = None,
              expected: tuple[float, float] | None = None) -> tuple[Step, Step]:
        """alpha exports, bravo imports (the timed transfer)."""
        drop = self.new_drop()
        exp = self.export(self.home_a, drop, f"{name}-export", progress,
                          expected[0] if expected else None)
        imp = self.import_(self.home_b, drop, f"{name}-import", progress,
                           expected[1] if expected else None)
        self._discard(drop)
        return exp, imp

    def ack(self, name: str) -> tuple[Step, Step]:
        """bravo exports (its acknowledgement), alpha imports it."""
        drop = self.new_drop()
        exp = self.export(self.home_b, drop, f"{name}-ack-export")
        imp = self.import_(self.home_a, drop, f"{name}-ack-import")
        self._discard(drop)
        return exp, imp

    def _discard(self, drop: Path) -> None:
        # Bundles of a large first transfer take disk space; the sizes are recorded.
        shutil.rmtree(drop, ignore_errors=True)


def _json(result: ChildResult) -> dict[str, object]:
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return {}
    if isinstance(data, dict) and "schema_version" in data:  # the --json envelope
        data = data.get("result")
    return data if isinstance(data, dict) else {}
