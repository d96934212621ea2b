"""README.txt of a drop: its words, whether it is current, and writing it.

Apart from :mod:`operations.droplist` (which lists a drop's bundles and
re-exports these names) so that a run whose drop holds no bundle -- the quick
path of a no-change export (:mod:`operations.quick`) -- writes the same README
without loading the bundle listing and the model behind it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundlesync.fsio import atomic_write

if TYPE_CHECKING:
    from bundlesync.operations.droplist import DropEntry

README_NAME = "README.txt"


def when_text(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms after the epoch"


def maybe_when(ms: int | None) -> str:
    return "(time sealed in the bundle)" if ms is None else when_text(ms)


def counts_text(entry: DropEntry) -> str:
    if entry.changes is None or entry.bodies is None:
        return "contents sealed in the bundle"
    return f"{entry.changes:,} changes, {entry.bodies:,} message bodies"


def readme_text(entries: list[DropEntry], *, writer: str, now_ms: int,
                size_text: Any = str) -> str:
    """The words of README.txt: what the stick holds and what to do with it."""
    lines = [
        "This drive carries bundlesync bundles: signed files of mail changes between",
        "sites that have no network between them. Encrypted bundles can be read only",
        "by the sites they are for; the .bsc files are public key cards.",
        "",
        f"Last written by the site {writer} on {when_text(now_ms)}. It holds:",
        "",
    ]
    if not entries:
        lines.append("  (no bundles)")
    for e in entries:
        to = ", ".join(e.recipients) or "any site"
        lines.append(f"  {e.name}")
        lines.append(f"      from {e.origin} for {to}, written {maybe_when(e.created_ms)},")
        lines.append(f"      {size_text(e.size)}, {counts_text(e)}, "
                     f"{'encrypted' if e.encrypted else 'NOT encrypted'}")
    lines += [
        "",
        "At the receiving site:  bundlesync import <this directory>",
        "then, to send its changes and acknowledgement back:  bundlesync export <this directory>",
        "",
        "A bundle may be erased once its receiving site has imported it; the sending",
        "site's next export removes such bundles by itself. 'bundlesync list <this",
        "directory>' says, on a site, which bundles were applied and which are safe",
        "to erase. Copy bundles as binary files, and every *.partKofN.bsb volume of",
        "a split bundle together.",
        "",
    ]
    return "\n".join(lines)


def readme_lists(drop: Path, names: list[str]) -> bool:
    """Whether README.txt in ``drop`` lists exactly the bundles ``names`` (first volumes).

    Bundle files are never rewritten under the same name, so a README listing the
    same names says what a new one would, but for when it was written: a run that
    changed nothing in the drop leaves it alone.
    """
    try:
        text = (drop / README_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    listed = [line[2:] for line in text.splitlines()
              if line.startswith("  ") and not line.startswith("   ")
              and line.endswith(".bsb")]
    return sorted(listed) == sorted(names) and (
        bool(names) or "  (no bundles)" in text.splitlines())


def write_readme(drop: Path, text: str) -> Path:
    """Write README.txt atomically (a yanked stick keeps the old one or the new one)."""
    path = drop / README_NAME
    atomic_write(path, text.encode("utf-8"), mode=0o644)
    return path
