"""When the store was last scanned, so that ``status --no-scan`` can say how old its numbers are.

Kept as a small file in the site's home (``<home>/last-scan``), written after
every scan the command line runs: its first line is the time (milliseconds
since the epoch); a second line ``every user and mailbox`` says that the scan
took in the whole store (no user mask, no mailbox filter). Losing it loses
nothing but the age shown -- and makes the next no-change run take the full
path (``operations.quick`` trusts a file's age only against a whole scan).
"""

from __future__ import annotations

from pathlib import Path

from bundlesync.fsio import atomic_write

SCANNED_NAME = "last-scan"
WHOLE_MARK = "every user and mailbox"


def record_scan(home: Path, when_ms: int, *, whole: bool = False) -> None:
    """Remember that the store was scanned at ``when_ms`` (atomically); ``whole``:
    every user and every mailbox was scanned."""
    # Not synced: a crash may lose the age shown, nothing else (see above).
    text = f"{when_ms}\n" + (f"{WHOLE_MARK}\n" if whole else "")
    atomic_write(home / SCANNED_NAME, text.encode("ascii"), mode=0o600, sync=False)


def _read(home: Path) -> list[str]:
    try:
        return (home / SCANNED_NAME).read_text(encoding="ascii").splitlines()
    except (OSError, ValueError):
        return []


def last_scan(home: Path) -> int | None:
    """When the store was last scanned, or None if never (or unknown)."""
    lines = _read(home)
    try:
        return int(lines[0].strip()) if lines else None
    except ValueError:
        return None


def last_whole_scan(home: Path) -> int | None:
    """When the last scan ran, if it took in every user and mailbox; else None."""
    lines = _read(home)
    if len(lines) != 2 or lines[1] != WHOLE_MARK:
        return None
    return last_scan(home)
