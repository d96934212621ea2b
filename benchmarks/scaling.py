"""Per-message cost as one mailbox grows: is bundlesync linear in a folder's size?

    python -m benchmarks.scaling [--counts 10000,30000,100000] [--json] [--workdir DIR]

For each count N: a store of ONE user with N messages in ONE folder (the shape
that a multi-user store hides: 2,000 messages per user never shows a per-message
cost that grows with the folder). Then, as an administrator would run it, each
command a child process: ``init`` (the inventory), the first ``export`` and
``import`` (every body), a no-change export, and a 1 % change cycle (export +
import after ``benchmarks.mutate``). The report gives each phase's time per
message and its ratio to the smallest count: a ratio near 1.0 is linear, a
ratio that grows with N is the quadratic behaviour this exists to catch.

Never a timed test: the numbers go into ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.bundlesync_driver import Bundlesync, BundlesyncUnavailableError, find_bundlesync
from benchmarks.generate import generate_store
from benchmarks.machine import describe_machine
from benchmarks.measure import CommandFailedError
from benchmarks.mutate import mutate_store
from benchmarks.progress import Progress, human_seconds

PHASES = ("init", "export", "import", "nochange-export", "1%-cycle")


@dataclass
class Point:
    """One count's measurements: seconds and peak RSS (KiB) per phase."""

    messages: int
    seconds: dict[str, float] = field(default_factory=dict)
    max_rss_kb: dict[str, int] = field(default_factory=dict)

    def per_message_us(self, phase: str) -> float:
        return self.seconds[phase] / self.messages * 1e6


def measure(command: list[str], work: Path, count: int, *, seed: int) -> Point:
    """Generate one user with ``count`` messages in one folder and time each phase."""
    src = work / f"source-{count}"
    generate_store(src, users=1, folders=1, messages=count, seed=seed, quiet=True)
    sites = Bundlesync(command, work=work / f"sites-{count}", src_root=src)
    point = Point(count)
    init = sites.setup()
    point.seconds["init"], point.max_rss_kb["init"] = init.sample.seconds, \
        init.sample.max_rss_kb
    exp, imp = sites.cycle(f"first-{count}")
    for phase, step in (("export", exp), ("import", imp)):
        point.seconds[phase], point.max_rss_kb[phase] = step.sample.seconds, \
            step.sample.max_rss_kb
    sites.ack(f"ack-{count}")
    drop = sites.new_drop()
    still = sites.export(sites.home_a, drop, f"nochange-{count}")
    point.seconds["nochange-export"] = still.sample.seconds
    point.max_rss_kb["nochange-export"] = still.sample.max_rss_kb
    mutate_store(src, frac=0.01, seed=seed + 1, renames=0)
    exp, imp = sites.cycle(f"cycle-{count}")
    point.seconds["1%-cycle"] = exp.sample.seconds + imp.sample.seconds
    point.max_rss_kb["1%-cycle"] = max(exp.sample.max_rss_kb, imp.sample.max_rss_kb)
    shutil.rmtree(sites.work.parent, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    return point


def render(points: list[Point], machine: dict[str, str]) -> str:
    base = points[0]
    lines = [
        "| messages in one folder | phase | seconds | µs per message | x smallest | peak RSS |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for point in points:
        for phase in PHASES:
            ratio = point.per_message_us(phase) / base.per_message_us(phase)
            lines.append(
                f"| {point.messages:,} | {phase} | {point.seconds[phase]:.2f} | "
                f"{point.per_message_us(phase):,.0f} | {ratio:.2f}x | "
                f"{point.max_rss_kb[phase] / 1024:.0f} MiB |")
    lines.append("")
    lines.append("Machine: " + ", ".join(f"{k}: {v}" for k, v in machine.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10000,30000,100000",
                        help="comma-separated message counts (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where to generate (default: a temp dir)")
    parser.add_argument("--bundlesync", help="command that runs bundlesync")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args(argv)
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not counts or counts[0] <= 0:
        parser.error("--counts takes positive whole numbers")
    command = find_bundlesync(args.bundlesync)
    if command is None:
        print("bundlesync is not installed and not importable", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bundlesync-scaling-", dir=args.workdir))
    points: list[Point] = []
    progress = Progress("scaling", total=len(counts), unit="sizes")
    try:
        version = Bundlesync(command, work=work, src_root=work).version()
        machine = describe_machine(work, version)
        for done, count in enumerate(counts):
            progress.note(f"{count:,} messages in one folder")
            points.append(measure(command, work, count, seed=args.seed))
            progress.update(done + 1)
    except (BundlesyncUnavailableError, CommandFailedError, OSError) as exc:
        print(f"scaling: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress.finish(human_seconds(sum(sum(p.seconds.values()) for p in points)))
    if args.json:
        print(json.dumps({"schema": 1, "machine": machine,
                          "points": [asdict(p) for p in points]}, indent=2))
    else:
        print(render(points, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
