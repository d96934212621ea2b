"""``forget`` and ``prune``: drop snapshots by policy, then reclaim unreferenced blobs.

Crash safety (archive-v1 §10): forget only deletes snapshot files (each delete is
atomic). Prune writes the repacked packs and one new index that supersedes every
current index, syncs them, and only then deletes the old indexes and the packs no
index lists. A kill -9 at any point leaves every kept snapshot restorable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bundlesync.archive.errors import ArchiveDamaged
from bundlesync.archive.locks import exclusive_lock
from bundlesync.archive.objects import BlobRef, PackBuilder
from bundlesync.archive.policy import Candidate, Decision, Policy, apply_policy
from bundlesync.archive.repository import (
    DATA_DIR,
    INDEX_DIR,
    TMP_DIR,
    Archive,
    Snapshot,
)
from bundlesync.fsio import fsync_dir
from bundlesync.operations import failpoints


@dataclass
class ForgetGroup:
    site: str
    group: str
    decisions: list[Decision]


def plan_forget(archive: Archive, policy: Policy, *, now_ms: int | None = None,
                tz: dt.tzinfo | None = None) -> list[ForgetGroup]:
    """The policy applied per group (site, user selection and filters), newest first."""
    zone = tz or dt.datetime.now().astimezone().tzinfo
    assert zone is not None
    groups: dict[tuple[bytes, str], list[Snapshot]] = {}
    for snap in archive.all_snapshots():
        groups.setdefault((snap.site, snap.group), []).append(snap)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    result = []
    for (site, group), snaps in sorted(groups.items()):
        decisions = apply_policy([Candidate(s.id, s.time_ms, s.tags) for s in snaps], policy,
                                 tz=zone, now_ms=now)
        result.append(ForgetGroup(site.hex(), group, decisions))
    return result


def forget(archive: Archive, plan: list[ForgetGroup]) -> list[str]:
    """Delete the snapshot files the plan removes; returns their ids."""
    removed = []
    for group in plan:
        for decision in group.decisions:
            if not decision.keep:
                archive.forget_snapshot(decision.candidate.id)
                failpoints.reached("forget")
                removed.append(decision.candidate.id)
    if removed:
        fsync_dir(archive.root / "snapshots")
    return removed


@dataclass
class PruneReport:
    packs_before: int = 0
    packs_after: int = 0
    packs_deleted: int = 0
    packs_written: int = 0
    blobs_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    indexes_replaced: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"packs_before": self.packs_before, "packs_after": self.packs_after,
                "packs_deleted": self.packs_deleted, "packs_written": self.packs_written,
                "blobs_removed": self.blobs_removed, "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "bytes_freed": self.bytes_before
                - self.bytes_after, "indexes_replaced": self.indexes_replaced,
                "seconds": round(self.seconds, 3)}


def referenced_blobs(archive: Archive) -> set[bytes]:
    """Every tree and body a snapshot present references. Raises ArchiveDamaged if a
    tree cannot be read: pruning then could drop what a snapshot needs."""
    used: set[bytes] = set()
    for snap in archive.all_snapshots():
        for entry in snap.users.values():
            for box in entry.mailboxes:
                if box.tree in used:
                    continue
                used.add(box.tree)
                used.update(m.body for m in archive.read_tree(box.tree))
    return used


def pack_files(root: Path) -> dict[bytes, Path]:
    found: dict[bytes, Path] = {}
    data = root / DATA_DIR
    if not data.is_dir():
        return found
    for sub in data.iterdir():
        if sub.is_dir():
            for path in sub.iterdir():
                with contextlib.suppress(ValueError):
                    if len(path.name) == 64:
                        found[bytes.fromhex(path.name)] = path
    return found


Listed = dict[bytes, tuple[int, list[BlobRef]]]


def _sort_packs(listed: Listed, on_disk: dict[bytes, Path], used: set[bytes],
                report: PruneReport) -> tuple[list[tuple[bytes, int, list[BlobRef]]],
                                              list[BlobRef]]:
    """(packs kept whole, live blobs to copy out of partly dead packs)."""
    keep: list[tuple[bytes, int, list[BlobRef]]] = []
    placed: set[bytes] = set()
    for pack, (size, refs) in sorted(listed.items()):
        if pack not in on_disk:
            continue
        if all(r.id in used for r in refs) and not any(r.id in placed for r in refs):
            keep.append((pack, size, refs))
            placed.update(r.id for r in refs)
    kept = {k[0] for k in keep}
    repack: list[BlobRef] = []
    for pack, (_size, refs) in sorted(listed.items()):
        if pack not in on_disk or pack in kept:
            continue
        for ref in refs:
            if ref.id in used and ref.id not in placed:
                repack.append(ref)
                placed.add(ref.id)
            elif ref.id not in used:
                report.blobs_removed += 1
    return keep, repack


def _repack(archive: Archive, repack: list[BlobRef]) -> list[tuple[bytes, int, list[list[object]]]]:
    """Write the live blobs into new packs (each written whole and synced)."""
    new_packs: list[tuple[bytes, int, list[list[object]]]] = []
    builder = PackBuilder(archive.key)
    for number, ref in enumerate(repack):
        builder.add(ref.kind, ref.id, archive.read_blob(ref.id, kind=ref.kind))
        if builder.size < archive.config.pack_size and number + 1 < len(repack):
            continue
        data, entries = builder.finish()
        name = hashlib.sha256(data).digest()
        archive.write_file(Path(DATA_DIR) / name.hex()[:2] / name.hex(), data)
        failpoints.reached("prune-pack")
        new_packs.append((name, len(data), entries))
        builder = PackBuilder(archive.key)
    return new_packs


def _delete_obsolete(archive: Archive, index_names: list[str], obsolete: list[Path],
                     report: PruneReport) -> None:
    """The superseded indexes first, then the packs no index lists, then tmp/."""
    for name in index_names:
        with contextlib.suppress(FileNotFoundError):
            (archive.root / INDEX_DIR / name).unlink()
        failpoints.reached("prune-delete")
    fsync_dir(archive.root / INDEX_DIR)
    report.indexes_replaced = len(index_names)
    for path in obsolete:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        report.packs_deleted += 1
        failpoints.reached("prune-delete")
    tmp = archive.root / TMP_DIR
    if tmp.is_dir():
        for path in tmp.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
    for sub in (archive.root / DATA_DIR).iterdir():
        with contextlib.suppress(OSError):
            os.rmdir(sub)  # empty fan-out directories only


def prune(archive: Archive, *, lock_wait: float = 0.0) -> PruneReport:
    """Reclaim the space of blobs no snapshot references. The caller holds the writer
    lock; prune also takes the archive from its readers (archive-v1 §11.2), waiting up
    to ``lock_wait`` seconds for a restore, view, check or snapshots to finish."""
    with exclusive_lock(archive.root, op="prune", wait=lock_wait):
        return _prune(archive)


def _prune(archive: Archive) -> PruneReport:
    started = time.monotonic()
    report = PruneReport()
    used = referenced_blobs(archive)
    index_names = archive.index_names()
    listed: Listed = {}
    for name in index_names:
        packs, _ = archive.read_index(name)
        for pack, size, refs in packs:
            listed.setdefault(pack, (size, refs))
    on_disk = pack_files(archive.root)
    report.packs_before = len(on_disk)
    report.bytes_before = sum(p.stat().st_size for p in on_disk.values())
    missing = used - {r.id for pack, (_s, refs) in listed.items() if pack in on_disk
                      for r in refs}
    if missing:
        raise ArchiveDamaged(f"{len(missing)} blob(s) that snapshots need are in no index; "
                             "prune refuses to run on a damaged archive.")
    keep, repack = _sort_packs(listed, on_disk, used, report)
    obsolete = sorted(set(on_disk) - {k[0] for k in keep})
    if repack or obsolete or len(index_names) > 1:
        # 1. new packs for the live blobs of partly dead packs, then one index for all.
        new_packs = _repack(archive, repack)
        report.packs_written = len(new_packs)
        entries = [(pack, size, [r.entry() for r in refs]) for pack, size, refs in keep]
        archive.write_index(entries + new_packs, supersedes=tuple(index_names))
        failpoints.reached("prune-index")
        # 2. only now delete.
        _delete_obsolete(archive, index_names, [on_disk[p] for p in obsolete], report)
    after = pack_files(archive.root)
    report.packs_after = len(after)
    report.bytes_after = sum(p.stat().st_size for p in after.values())
    report.seconds = time.monotonic() - started
    return report
