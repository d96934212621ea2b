"""``bundlesync check``: is every snapshot of the archive whole and restorable? (archive-v1 §12)

Structure: every index and snapshot file authenticates and is signed by the
site, every pack an index lists is there at its size, every tree and body a
snapshot names is listed. With read-data: every pack (or a rotating subset) is
read, its name checked against its hash, every segment decrypted and
decompressed and every blob re-hashed. Each problem names what it affects:
snapshots, users and mailboxes. Damage to one blob never stops the check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bundlesync.archive.errors import ArchiveDamaged
from bundlesync.archive.locks import reader_lock
from bundlesync.archive.objects import (
    BLOB_TREE,
    NONCE_SIZE,
    TAG_SIZE,
    BlobRef,
    parse_entry,
    read_pack_header,
    read_segment,
)
from bundlesync.archive.prune import pack_files
from bundlesync.archive.repository import Archive, Snapshot

Progress = Callable[[int, int], None]


@dataclass
class Problem:
    message: str
    affects: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"message": self.message, "affects": self.affects}


@dataclass
class CheckReport:
    snapshots: int = 0
    indexes: int = 0
    packs: int = 0
    packs_read: int = 0
    blobs_read: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "snapshots": self.snapshots, "indexes": self.indexes,
                "packs": self.packs, "packs_read": self.packs_read,
                "blobs_read": self.blobs_read, "bytes_read": self.bytes_read,
                "problems": [p.as_json() for p in self.problems], "notes": self.notes,
                "seconds": round(self.seconds, 3)}


def subset_selects(pack: bytes, percent: float, day: int) -> bool:
    """Whether the rotating ``percent`` slice of day ``day`` covers ``pack``.

    The pack name as a fraction of 2^64 falls in a window that moves by
    ``percent`` each day, so ceil(100 / percent) days read every pack once.
    """
    if percent >= 100:
        return True
    # In basis points, with integers: a float position could round up to 1.0 and fall
    # out of every window.
    width = max(1, round(percent * 100))
    position = (int.from_bytes(pack[:8], "big") * 10_000) >> 64
    return (position - day * width) % 10_000 < width


def _check_indexes(archive: Archive, report: CheckReport
                   ) -> tuple[dict[bytes, list[BlobRef]], dict[bytes, int]]:
    """Every index signed, authentic and well formed: (blob -> places, pack -> size)."""
    refs: dict[bytes, list[BlobRef]] = {}
    pack_sizes: dict[bytes, int] = {}
    for name in archive.index_names():
        report.indexes += 1
        if hashlib.sha256((archive.root / "index" / name).read_bytes()).hexdigest() != name:
            report.problems.append(Problem(f"Index file {name[:12]} does not match its name "
                                           "(altered or damaged)."))
            continue
        try:
            packs, _ = archive.read_index(name)
        except ArchiveDamaged as exc:
            report.problems.append(Problem(exc.message))
            continue
        for pack, size, blob_refs in packs:
            pack_sizes[pack] = size
            for ref in blob_refs:
                refs.setdefault(ref.id, []).append(ref)
    return refs, pack_sizes


def _check_pack_files(pack_sizes: dict[bytes, int], on_disk: dict[bytes, Path],
                      report: CheckReport) -> dict[bytes, str]:
    """Every listed pack present at its size: pack -> problem."""
    bad_packs: dict[bytes, str] = {}
    for pack, size in pack_sizes.items():
        path = on_disk.get(pack)
        if path is None:
            bad_packs[pack] = f"pack {pack.hex()[:12]} is missing"
        elif path.stat().st_size != size:
            bad_packs[pack] = f"pack {pack.hex()[:12]} has the wrong size"
    unlisted = set(on_disk) - set(pack_sizes)
    if unlisted:
        report.notes.append(f"{len(unlisted)} pack(s) no index lists (left by an interrupted "
                            "run); 'bundlesync prune' removes them.")
    return bad_packs


def check_archive(archive: Archive, *, read_data: bool = False,
                  subset_percent: float | None = None, day: int | None = None,
                  progress: Progress | None = None, lock_wait: float = 0.0) -> CheckReport:
    """Check the archive (see the module text); problems are in the report, not raised.
    Holds a reader lock (archive-v1 §11.2), so no prune removes a pack being checked;
    waits up to ``lock_wait`` seconds for a running prune."""
    with reader_lock(archive.root, op="check", wait=lock_wait):
        return _check(archive, read_data=read_data, subset_percent=subset_percent, day=day,
                      progress=progress)


def _check(archive: Archive, *, read_data: bool, subset_percent: float | None,
           day: int | None, progress: Progress | None) -> CheckReport:
    started = time.monotonic()
    report = CheckReport()
    refs, pack_sizes = _check_indexes(archive, report)
    on_disk = pack_files(archive.root)
    report.packs = len(on_disk)
    bad_packs = _check_pack_files(pack_sizes, on_disk, report)
    # read-data: every blob of the chosen packs re-hashed.
    bad_blobs: dict[bytes, str] = {}
    if read_data or subset_percent is not None:
        today = day if day is not None else dt.date.today().toordinal()
        chosen = [p for p in sorted(pack_sizes) if p in on_disk and (
            subset_percent is None or subset_selects(p, subset_percent, today))]
        for number, pack in enumerate(chosen):
            if progress is not None:
                progress(number, len(chosen))
            _read_pack(archive, pack, on_disk[pack].read_bytes(), refs=refs,
                       bad_blobs=bad_blobs, report=report)
    # A blob is lost when every pack that holds it is.
    for blob_id, blob_refs in refs.items():
        if blob_id not in bad_blobs and all(r.pack in bad_packs for r in blob_refs):
            bad_blobs[blob_id] = bad_packs[blob_refs[0].pack]
    # snapshots: signed, authentic; every tree and body listed and sound.
    affected: dict[str, set[str]] = {}
    tree_cache: dict[bytes, list[bytes] | str] = {}
    for name in archive.snapshot_names():
        report.snapshots += 1
        try:
            snap = archive.load_snapshot(name)
        except ArchiveDamaged as exc:
            report.problems.append(Problem(exc.message, [f"snapshot {name}"]))
            continue
        _check_snapshot(archive, snap, refs=refs, bad_blobs=bad_blobs, tree_cache=tree_cache,
                        affected=affected)
    for problem_text, places in sorted(affected.items()):
        report.problems.append(Problem(problem_text, sorted(places)))
    report.seconds = time.monotonic() - started
    return report


def _check_snapshot(archive: Archive, snap: Snapshot, *, refs: dict[bytes, list[BlobRef]],
                    bad_blobs: dict[bytes, str], tree_cache: dict[bytes, list[bytes] | str],
                    affected: dict[str, set[str]]) -> None:
    for user, entry in snap.users.items():
        for box in entry.mailboxes:
            place = f"snapshot {snap.id} user {user} mailbox {'/'.join(box.path)}"
            bodies = tree_cache.get(box.tree)
            if bodies is None:
                if box.tree not in refs:
                    bodies = f"tree {box.tree.hex()[:16]} is in no index"
                elif box.tree in bad_blobs:
                    bodies = f"tree {box.tree.hex()[:16]}: {bad_blobs[box.tree]}"
                else:
                    try:
                        bodies = [m.body for m in archive.read_tree(box.tree)]
                    except ArchiveDamaged as exc:
                        bodies = exc.message
                tree_cache[box.tree] = bodies
            if isinstance(bodies, str):
                affected.setdefault(bodies, set()).add(place)
                continue
            for body in bodies:
                if body not in refs:
                    text = f"message body {body.hex()[:16]} is in no index"
                elif body in bad_blobs:
                    text = f"message body {body.hex()[:16]}: {bad_blobs[body]}"
                else:
                    continue
                affected.setdefault(text, set()).add(place)


def _read_pack(archive: Archive, pack: bytes, data: bytes, *, refs: dict[bytes, list[BlobRef]],
               bad_blobs: dict[bytes, str], report: CheckReport) -> None:
    """Read one pack whole; mark the blobs it damages, report pack-level problems."""
    label = f"pack {pack.hex()[:12]}"
    report.packs_read += 1
    report.bytes_read += len(data)
    if hashlib.sha256(data).digest() != pack:
        # Go on segment by segment: the sound ones stay restorable and are not blamed.
        problem = f"{label} does not match its name (altered or damaged)"
    else:
        problem = None
    try:
        header = [parse_entry(e, pack, what=label)
                  for e in read_pack_header(archive.key, data, what=label)]
    except ArchiveDamaged as exc:
        header = None
        problem = problem or exc.message
    # A pack may be listed by two indexes (an interrupted prune): compare distinct entries.
    listed = list({r for rs in refs.values() for r in rs if r.pack == pack})
    if header is not None and set(header) != set(listed):
        problem = problem or f"{label}: its header and the index disagree"
    segments: dict[tuple[int, int], list[BlobRef]] = {}
    for ref in listed:
        segments.setdefault((ref.segment_offset, ref.segment_length), []).append(ref)
    for (offset, length), blobs in sorted(segments.items()):
        sealed = data[offset:offset + length]
        try:
            if len(sealed) != length or length < NONCE_SIZE + TAG_SIZE:
                raise ArchiveDamaged(f"a segment of {label} is cut short")
            plain = read_segment(archive.key, sealed, what=f"a segment of {label}")
        except ArchiveDamaged as exc:
            for ref in blobs:
                bad_blobs[ref.id] = exc.message
            continue
        for ref in blobs:
            report.blobs_read += 1
            blob = plain[ref.offset:ref.offset + ref.length]
            if hashlib.sha256(blob).digest() != ref.id:
                kind = "tree" if ref.kind == BLOB_TREE else "body"
                bad_blobs[ref.id] = f"the {kind} in {label} does not match its hash"
    if problem is not None:
        # A pack-level problem (name, header) is reported even if every blob still reads.
        report.problems.append(Problem(problem, [label]))
