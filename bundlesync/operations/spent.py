"""The high-water mark of what this site has spent, kept outside its state index.

A site must never issue one change counter or bundle number twice (design
§3.1, "no reuse after restore"). The state index remembers the counters, but
the index is what a restore or an emptied file takes away, so a small file next
to it, ``<home>/spent.json``, remembers them as well::

    {"site": "<site id>", "incarnation": 3, "reserved": 2048, "committed": 1290,
     "seqs": {"<peer site id>": 17}}

* ``reserved``: no counter of ``incarnation`` above it has been used. It is
  raised in blocks of :data:`BLOCK`, written and synced *before* a counter of
  the new block is used, so marking costs one write per block, not per change.
* ``committed``: the index held this many changes of ``incarnation`` when the
  mark was last settled (after a run's work was committed, and before each
  bundle leaves the site).
* ``seqs``: the highest bundle number of ``incarnation`` reserved for each peer,
  written before that bundle is written.

At the start of every run (:func:`bundlesync.operations.site.open_site`) the
index is compared with the mark. An index at an older incarnation, with fewer
committed changes, or with a lower bundle number than the mark says was
restored or emptied: the site moves to a new incarnation before it records or
exports anything. An index *ahead* of the mark means the mark was restored or
lost on its own; it is rewritten from the index (nothing can have been reused).

What the mark cannot see (docs/conflict-rules.md, "Restored sites"): a home
restored whole from one old copy brings back an old mark with its index, so
they agree. Then the evidence is outside the site -- our own newer bundles in
the drop (``Site.check_drop``), a peer's acknowledgement, our own changes or
bundle numbers coming back, the forks our reused counters make at peers -- and
the import acts on each of those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from bundlesync.errors import StateError
from bundlesync.fsio import atomic_write

MARK_NAME = "spent.json"
BLOCK = 1024


@dataclass(frozen=True, slots=True)
class SpentMark:
    """What one site has spent of its current incarnation (see the module docstring)."""

    site: str
    incarnation: int
    reserved: int = 0
    committed: int = 0
    seqs: dict[str, int] = field(default_factory=dict)

    def reserve(self, counter: int) -> SpentMark:
        """This mark raised so that ``counter`` is covered, a block at a time."""
        return replace(self, reserved=counter + BLOCK)

    def as_json(self) -> str:
        return json.dumps({"site": self.site, "incarnation": self.incarnation,
                           "reserved": self.reserved, "committed": self.committed,
                           "seqs": dict(sorted(self.seqs.items()))}, indent=1) + "\n"


def read_mark(home: Path) -> SpentMark | None:
    """The mark in ``home``, or None if there is none yet."""
    path = home / MARK_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"the high-water mark {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
        seqs = data.get("seqs", {})
        if not isinstance(seqs, dict):
            raise TypeError("seqs is not a table")
        return SpentMark(site=str(data["site"]), incarnation=int(data["incarnation"]),
                         reserved=int(data["reserved"]), committed=int(data["committed"]),
                         seqs={str(k): int(v) for k, v in seqs.items()})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(
            f"the high-water mark {path} is damaged: {exc}",
            hint="It guards against reusing change numbers after a restore. If the state "
                 "index is known to be current, move the file away and run again; it is "
                 "rewritten from the index.",
        ) from exc


def write_mark(home: Path, mark: SpentMark) -> None:
    """Replace the mark atomically and durably: unique temporary name, fsync, rename,
    fsync of the directory. A crash leaves the old mark or the new one, whole."""
    atomic_write(home / MARK_NAME, mark.as_json().encode("utf-8"), mode=0o600)
