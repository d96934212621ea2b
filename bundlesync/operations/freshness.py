"""When the store was last scanned, so that ``status --no-scan`` can say how old its numbers are.

Kept as a one-line file in the site's home (``<home>/last-scan``: milliseconds
since the epoch), written after every scan the command line runs. Losing it
loses nothing but the age shown.
"""

from __future__ import annotations

from pathlib import Path

from bundlesync.fsio import atomic_write

SCANNED_NAME = "last-scan"


def record_scan(home: Path, when_ms: int) -> None:
    """Remember that the store was scanned at ``when_ms`` (atomically)."""
    # Not synced: a crash may lose the age shown, nothing else (see above).
    atomic_write(home / SCANNED_NAME, f"{when_ms}\n".encode("ascii"), mode=0o600, sync=False)


def last_scan(home: Path) -> int | None:
    """When the store was last scanned, or None if never (or unknown)."""
    try:
        return int((home / SCANNED_NAME).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
