"""Run child processes and measure them: wall time, peak RSS, CPU time.

Each command runs as its own child and ``os.wait4`` returns the resource usage
of exactly that child (and the descendants it waited for), not the running
maximum that ``RUSAGE_CHILDREN`` gives. Linux counts the memory a process had
*before* ``exec`` in its peak RSS, and a child forked from this Python process
starts with the harness's own ~40 MB; so when GNU time is installed the
command runs under ``/usr/bin/time -f %M`` (a small C program whose child
starts small) and its figure is used for the peak RSS.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.progress import Progress, human_seconds


@dataclass
class Sample:
    """One measured run of one tool."""

    seconds: float
    max_rss_kb: int = 0
    cpu_seconds: float = 0.0
    bytes: int | None = None  # bytes on the wire / in the bundle, when measured
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class ChildResult:
    returncode: int
    seconds: float
    max_rss_kb: int
    cpu_seconds: float
    stdout: str
    stderr: str

    def sample(self) -> Sample:
        return Sample(self.seconds, self.max_rss_kb, self.cpu_seconds)

    def tail(self, lines: int = 12) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return "\n".join(text[-lines:])


class CommandFailedError(RuntimeError):
    def __init__(self, cmd: Sequence[str], result: ChildResult) -> None:
        self.cmd = list(cmd)
        self.result = result
        super().__init__(f"{' '.join(self.cmd)} exited with {result.returncode}:\n"
                         f"{result.tail()}")


GNU_TIME = "/usr/bin/time"


def gnu_time_available() -> bool:
    return shutil.which(GNU_TIME) is not None


def _heartbeat(stop: threading.Event, progress: Progress, label: str,
               expected: float | None, started: float) -> None:
    # Only long commands talk: the first line after 10 s, then every 15 s.
    wait = 10.0
    while not stop.wait(wait):
        elapsed = time.monotonic() - started
        eta = ""
        if expected and elapsed < expected:
            eta = f", ETA ~{human_seconds(expected - elapsed)}"
        elif expected:
            eta = f", longer than expected ({human_seconds(expected)})"
        progress.note(f"{label}: {human_seconds(elapsed)} elapsed{eta}")
        wait = 15.0


def run_child(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, log_dir: Path, name: str,
              progress: Progress | None = None, expected: float | None = None,
              check: bool = True) -> ChildResult:
    """Run ``cmd`` to completion; stdout and stderr go to files in ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path = log_dir / f"{name}.out"
    err_path = log_dir / f"{name}.err"
    rss_path = log_dir / f"{name}.rss"
    argv = list(cmd)
    if gnu_time_available():
        argv = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *argv]
    stop = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=dict(env) if env is not None else None, cwd=cwd)
        beat = None
        if progress is not None:
            beat = threading.Thread(target=_heartbeat,
                                    args=(stop, progress, name, expected, started), daemon=True)
            beat.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            stop.set()
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if beat is not None:
            beat.join()
    max_rss_kb = int(usage.ru_maxrss)  # kilobytes on Linux
    if argv[0] == GNU_TIME:
        max_rss_kb = _gnu_time_rss(rss_path, max_rss_kb)
    result = ChildResult(
        returncode=proc.returncode,
        seconds=seconds,
        max_rss_kb=max_rss_kb,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )
    if check and result.returncode != 0:
        raise CommandFailedError(cmd, result)
    return result


def _gnu_time_rss(path: Path, fallback: int) -> int:
    # The last line is the figure; a line before it may say the command failed.
    try:
        lines = path.read_text().strip().splitlines()
        path.unlink()
        return int(lines[-1])
    except (OSError, ValueError, IndexError):
        return fallback


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    low: float
    high: float
    n: int


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    return Summary(statistics.median(values), min(values), max(values), len(values))
