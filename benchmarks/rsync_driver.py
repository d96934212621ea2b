"""``rsync -a --delete`` between two local trees, with its own byte count.

Local rsync copies whole files (``--whole-file`` is the default between local
paths): that is the fast mode and what an admin's cron job does. With
``delta=True`` it runs as it would over ssh (``--no-W --fuzzy``: rolling
checksums, and a renamed file found by name similarity in the same directory).
``--stats`` is always on so that the bytes that crossed the pipe between
rsync's sender and receiver ("Total bytes sent" + "received") are known.
Note that rsync does not fsync what it writes.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.measure import Sample, run_child
from benchmarks.progress import Progress

_TOTAL = re.compile(r"^Total bytes (sent|received):\s*([\d,.]+)", re.MULTILINE)


def parse_stats(text: str) -> tuple[int, int]:
    """(sent, received) from ``rsync --stats`` output."""
    found = {kind: int(value.replace(",", "").replace(".", ""))
             for kind, value in _TOTAL.findall(text)}
    if set(found) != {"sent", "received"}:
        raise ValueError("rsync --stats output has no byte totals")
    return found["sent"], found["received"]


def rsync_command(src: Path, dst: Path, *, delta: bool) -> list[str]:
    cmd = ["rsync", "-a", "--delete", "--stats"]
    if delta:
        cmd += ["--no-W", "--fuzzy"]
    return [*cmd, f"{src}/", f"{dst}/"]


def rsync_copy(src: Path, dst: Path, *, delta: bool, log_dir: Path, name: str,
               progress: Progress | None = None, expected: float | None = None) -> Sample:
    result = run_child(rsync_command(src, dst, delta=delta), log_dir=log_dir, name=name,
                       progress=progress, expected=expected)
    sent, received = parse_stats(result.stdout)
    sample = result.sample()
    sample.bytes = sent + received
    sample.extra = {"sent": sent, "received": received}
    return sample
