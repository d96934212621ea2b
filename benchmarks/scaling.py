"""Per-message cost as one mailbox grows: is bundlesync linear in a folder's size?

    python -m benchmarks.scaling [--counts 10000,30000,100000] [--runs 1] [--json]

For each count N: a store of ONE user with N messages in ONE folder (the shape
that a multi-user store hides: 2,000 messages per user never shows a per-message
cost that grows with the folder). Then, as an administrator would run it, each
command a child process: ``init`` (the inventory), the first ``export`` and
``import`` (every body), a no-change export, and a 1 % change cycle (export +
import after ``benchmarks.mutate``). The report gives each phase's wall and CPU
time per message, its ratio to the smallest count (near 1.0 is linear; a ratio
that grows with N is the quadratic behaviour this exists to catch), each
step's peak RSS, and whether the targets are met: per-message cost within
1.5x of the smallest count, peak RSS within 200 MB.

Never a timed test: the numbers go into ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.bundlesync_driver import Bundlesync, BundlesyncUnavailableError, find_bundlesync
from benchmarks.generate import generate_store
from benchmarks.machine import command_line, describe_machine, header_lines, utc_now
from benchmarks.measure import CommandFailedError, Sample
from benchmarks.mutate import mutate_store
from benchmarks.progress import Progress, human_bytes, human_seconds

PHASES = ("init", "export", "import", "nochange-export", "1%-cycle")
# The phases whose work grows with the folder, so whose cost per message must not.
# A no-change export does a fixed amount of work: its cost per message falls.
LINEAR_PHASES = ("init", "export", "import", "1%-cycle")
TARGET_RATIO = 1.5  # per-message cost at the largest count / at the smallest
TARGET_RSS_BYTES = 200_000_000
# The driver's log name of each step, for the ETA of the next count.
STEP_NAMES = {"init": "init-alpha", "export": "first-export", "import": "first-import",
              "nochange-export": "nochange", "change-export": "change-export",
              "change-import": "change-import"}


@dataclass
class Point:
    """One count's measurements per phase: seconds and CPU seconds (medians), peak RSS (KiB)."""

    messages: int
    store_bytes: int = 0
    runs: int = 1
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    max_rss_kb: dict[str, int] = field(default_factory=dict)

    def per_message_us(self, phase: str) -> float:
        return self.seconds[phase] / self.messages * 1e6

    def cpu_per_message_us(self, phase: str) -> float:
        return self.cpu_seconds.get(phase, 0.0) / self.messages * 1e6


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _step_note(progress: Progress, phase: str, sample: Sample, messages: int,
               nbytes: int) -> None:
    rate = messages / sample.seconds if sample.seconds > 0 else 0.0
    progress.note(f"{phase}: {messages:,} messages, {human_bytes(nbytes)} in "
                  f"{human_seconds(sample.seconds)} ({rate:,.0f} messages/s, "
                  f"{human_bytes(nbytes / max(sample.seconds, 1e-9))}/s), CPU "
                  f"{human_seconds(sample.cpu_seconds)}, peak {sample.max_rss_kb / 1024:.0f} MiB")


def one_sequence(sites: Bundlesync, src: Path, *, seed: int, frac: float, renames: int,
                 progress: Progress, messages: int, nbytes: int) -> dict[str, Sample]:
    """init, first export + import, ack, no-change export, a 1 % cycle: a sample per phase."""
    samples: dict[str, Sample] = {}
    sites.progress = progress
    samples["init"] = sites.setup().sample
    _step_note(progress, "init", samples["init"], messages, nbytes)
    exp, imp = sites.cycle("first")
    samples["export"], samples["import"] = exp.sample, imp.sample
    _step_note(progress, "export", exp.sample, messages, nbytes)
    _step_note(progress, "import", imp.sample, messages, nbytes)
    sites.ack("first")
    samples["nochange-export"] = sites.export(sites.home_a, sites.new_drop(), "nochange").sample
    report = mutate_store(src, frac=frac, seed=seed + 1, renames=renames)
    exp, imp = sites.cycle("change")
    samples["change-export"], samples["change-import"] = exp.sample, imp.sample
    samples["1%-cycle"] = Sample(seconds=exp.sample.seconds + imp.sample.seconds,
                                 max_rss_kb=max(exp.sample.max_rss_kb, imp.sample.max_rss_kb),
                                 cpu_seconds=exp.sample.cpu_seconds + imp.sample.cpu_seconds)
    progress.note(f"1 % cycle ({report.operations:,} changes): "
                  f"{human_seconds(samples['1%-cycle'].seconds)}")
    return samples


def measure(command: list[str], work: Path, count: int, *, args: argparse.Namespace,
            previous: Point | None) -> Point:
    """Generate one user with ``count`` messages in one folder and time each phase."""
    pristine = work / f"source-{count}"
    stats = generate_store(pristine, users=1, folders=1, messages=count, seed=args.seed,
                           quiet=args.quiet)
    runs: list[dict[str, Sample]] = []
    for run in range(1, args.runs + 1):
        progress = Progress(f"{count:,} messages, run {run}/{args.runs}", quiet=args.quiet)
        run_dir = work / f"run-{count}-{run}"
        run_dir.mkdir()
        if args.runs == 1:
            src = pristine  # used once: no copy needed
        else:
            src = run_dir / "source"
            subprocess.run(["cp", "-a", str(pristine), str(src)], check=True)
        sites = Bundlesync(command, work=run_dir, src_root=src)
        if previous is not None:
            # A linear tool takes this long; the heartbeat of a long step shows the ETA.
            scale = count / previous.messages
            sites.expected = {STEP_NAMES[p]: previous.seconds[p] * scale
                              for p in ("init", "export", "import", "nochange-export")}
        runs.append(one_sequence(sites, src, seed=args.seed, frac=args.frac,
                                 renames=args.renames, progress=progress, messages=count,
                                 nbytes=stats.bytes))
    # The stores of this count stay until the whole run ends (main removes the work
    # directory): on ext4 without a journal, files created within a minute or so of
    # deleting many cost several times more system time, which deleting them here
    # would bill to the next count's steps.
    point = Point(count, store_bytes=stats.bytes, runs=args.runs)
    for phase in PHASES:
        point.seconds[phase] = statistics.median(r[phase].seconds for r in runs)
        point.cpu_seconds[phase] = statistics.median(r[phase].cpu_seconds for r in runs)
        point.max_rss_kb[phase] = max(r[phase].max_rss_kb for r in runs)
    return point


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: what was measured against it, and whether it is met."""

    target: str
    measured: str
    met: bool


def verdicts(points: list[Point]) -> list[Verdict]:
    """Per-message cost at the largest count within 1.5x of the smallest; peak RSS ≤ 200 MB."""
    base, top = points[0], points[-1]
    out: list[Verdict] = []
    if top is not base:
        for phase in LINEAR_PHASES:
            wall = _ratio(top.per_message_us(phase), base.per_message_us(phase))
            cpu = _ratio(top.cpu_per_message_us(phase), base.cpu_per_message_us(phase))
            cpu_text = "—" if cpu is None else f"{cpu:.2f}x"
            out.append(Verdict(
                f"{phase}: per-message cost at {top.messages:,} within {TARGET_RATIO}x of "
                f"{base.messages:,}",
                f"{base.per_message_us(phase):,.0f} → {top.per_message_us(phase):,.0f} µs: "
                f"{wall or 0:.2f}x (CPU {cpu_text})",
                wall is not None and wall <= TARGET_RATIO))
    peak = max(max(p.max_rss_kb.values()) for p in points)
    out.append(Verdict("peak RSS ≤ 200 MB at every count and step",
                       f"{peak / 1024:.0f} MiB at most", peak * 1024 <= TARGET_RSS_BYTES))
    return out


def render(points: list[Point], header: list[str]) -> str:
    """Markdown: the header, every count and phase, then the targets met or not."""
    base = points[0]
    lines = [*header, "",
             f"One user, one folder; {base.runs} run(s) per count (medians); \"x smallest\" is "
             f"the cost per message against {base.messages:,} messages (1.00x: linear).", "",
             "| messages in one folder | phase | seconds | CPU seconds | µs per message "
             "| CPU µs per message | x smallest | CPU x smallest | peak RSS |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for point in points:
        for phase in PHASES:
            wall = _ratio(point.per_message_us(phase), base.per_message_us(phase))
            cpu = _ratio(point.cpu_per_message_us(phase), base.cpu_per_message_us(phase))
            lines.append(
                f"| {point.messages:,} | {phase} | {point.seconds[phase]:.2f} | "
                f"{point.cpu_seconds.get(phase, 0.0):.2f} | "
                f"{point.per_message_us(phase):,.0f} | {point.cpu_per_message_us(phase):,.0f} | "
                f"{'—' if wall is None else f'{wall:.2f}x'} | "
                f"{'—' if cpu is None else f'{cpu:.2f}x'} | "
                f"{point.max_rss_kb[phase] / 1024:.0f} MiB |")
    lines += ["", "| target | measured | met? |", "|---|---|---|"]
    lines += [f"| {v.target} | {v.measured} | {'**met**' if v.met else 'not met'} |"
              for v in verdicts(points)]
    lines += ["", "The no-change export does a fixed amount of work (its cost per message falls "
              "as the folder grows): it has no per-message target. Targets are judged on wall "
              "time; CPU time, steadier on a shared machine, is beside it."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10000,30000,100000",
                        help="comma-separated message counts (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs of the whole sequence per count; medians (default 1)")
    parser.add_argument("--frac", type=float, default=0.01, help="the change round (0.01)")
    parser.add_argument("--renames", type=int, default=0,
                        help="folder renames in the change round (default 0: one folder)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where to generate (default: a temp dir)")
    parser.add_argument("--bundlesync", help="command that runs bundlesync")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] <= 0:
        parser.error("--counts takes positive whole numbers")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.count_list = counts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = find_bundlesync(args.bundlesync)
    if command is None:
        print("bundlesync is not installed and not importable", file=sys.stderr)
        return 2
    date = utc_now()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bundlesync-scaling-", dir=args.workdir))
    points: list[Point] = []
    progress = Progress("scaling", total=sum(args.count_list), unit="messages",
                        quiet=args.quiet)
    try:
        version = Bundlesync(command, work=work, src_root=work).version()
        machine = describe_machine(work, version)
        for count in args.count_list:
            progress.note(f"{count:,} messages in one folder")
            points.append(measure(command, work, count, args=args,
                                  previous=points[-1] if points else None))
            # Messages done out of all counts: the rate and ETA assume linear cost.
            progress.every = 0.0
            progress.update(sum(p.messages for p in points))
    except (BundlesyncUnavailableError, CommandFailedError, OSError) as exc:
        print(f"scaling: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress.finish(f"{len(points)} counts")
    load = os.getloadavg()
    machine["load average at end"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    cmd = command_line("benchmarks.scaling", argv)
    if args.json:
        print(json.dumps({"schema": 2, "command": cmd, "date": date, "machine": machine,
                          "points": [asdict(p) for p in points],
                          "targets": [asdict(v) for v in verdicts(points)]}, indent=2))
    else:
        print(render(points, header_lines(command=cmd, date=date, machine=machine)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
