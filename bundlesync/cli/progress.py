"""Progress on stderr for long work: bytes, rate and ETA -- on a terminal only."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human_bytes(count: float) -> str:
    """The one size formatter: IEC units (1 KiB = 1,024 bytes), as ``ls -h`` and restic."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover


class Progress:
    """A one-line progress display, redrawn at most a few times a second."""

    def __init__(self, label: str, *, total: int | None = None, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.done = 0
        self.note = ""
        self.phase = ""
        self.phase_start = self.start
        self.count = 0
        self.count_total: int | None = None

    def bytes(self, done: int) -> None:
        self.done = done
        self._draw()

    def items(self, phase: str, done: int, total: int | None) -> None:
        """Count things (messages, records) of one phase; rate and ETA follow them."""
        if phase != self.phase:
            self.phase, self.phase_start = phase, time.monotonic()
        self.count, self.count_total = done, total
        self._draw(force=total is not None and done >= total)

    def step(self, note: str) -> None:
        self.note = note
        self._draw()

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < 0.2:
            return
        self.last_draw = now
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        text = f"{self.label}:"
        if self.phase:
            spent = max(now - self.phase_start, 1e-6)
            per_second = self.count / spent
            text += f" {self.phase} {self.count:,}"
            if self.count_total:
                text += f"/{self.count_total:,} ({self.count * 100 // self.count_total}%)"
            text += f" at {per_second:,.0f}/s"
            if self.count_total and per_second > 0:
                eta = max(self.count_total - self.count, 0) / per_second
                text += f", ETA {eta:,.0f} s"
        if self.done:
            text += f"  {human_bytes(self.done)} written at {human_bytes(rate)}/s"
        if self.total and rate > 0:
            remaining = max(self.total - self.done, 0) / rate
            text += f", {self.done * 100 // max(self.total, 1)}%, ETA {remaining:,.0f} s"
        if self.note:
            text += f"  {self.note[:40]}"
        self.stream.write("\r" + text.ljust(79)[:120])
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.last_draw:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
