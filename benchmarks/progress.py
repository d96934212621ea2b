"""Progress lines on stderr for long work: phase, amount, bytes, rate, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    """Decimal units, as disks and networks count (1 MB = 10^6 bytes)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    if s < 0.9995:  # so that 0.9996 s reads "1.00 s", not "1000 ms"
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    minutes, secs = divmod(round(s), 60)
    return f"{minutes} min {secs:02d} s"


class Progress:
    """Throttled progress of one phase.

    On a terminal the line is redrawn in place; otherwise (a log file, CI) a
    new line is written at most every ``every`` seconds so logs stay short.
    """

    def __init__(self, phase: str, *, total: int | None = None, unit: str = "items",
                 stream: TextIO | None = None, quiet: bool = False) -> None:
        self.phase = phase
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.every = 0.5 if self.tty else 5.0
        self.start = time.monotonic()
        self._last = self.start

    def _line(self, done: int, nbytes: int) -> str:
        elapsed = time.monotonic() - self.start
        parts: list[str] = []
        if self.total:
            parts.append(f"{done:,}/{self.total:,} {self.unit}")
        else:
            parts.append(f"{done:,} {self.unit}")
        if nbytes:
            parts.append(human_bytes(nbytes))
            if elapsed > 0:
                parts.append(f"{human_bytes(nbytes / elapsed)}/s")
        if self.total and done and elapsed > 0:
            remaining = elapsed * (self.total - done) / done
            parts.append(f"ETA {human_seconds(remaining)}")
        else:
            parts.append(f"{human_seconds(elapsed)} elapsed")
        return f"[{self.phase}] " + ", ".join(parts)

    def update(self, done: int, nbytes: int = 0) -> None:
        now = time.monotonic()
        if self.quiet or now - self._last < self.every:
            return
        self._last = now
        self._write(self._line(done, nbytes), final=False)

    def note(self, text: str) -> None:
        """A one-off line in this phase (e.g. "run 2/3: 41 s, ETA ~44 s")."""
        if not self.quiet:
            self._write(f"[{self.phase}] {text}", final=True)

    def finish(self, summary: str = "") -> float:
        elapsed = time.monotonic() - self.start
        if not self.quiet:
            text = summary or "done"
            self._write(f"[{self.phase}] {text} in {human_seconds(elapsed)}", final=True)
        return elapsed

    def _write(self, text: str, *, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
