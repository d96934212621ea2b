"""Apply a realistic "1 % change" to a generated store, deterministic by seed.

    python -m benchmarks.mutate STORE --frac 0.01 --seed 2 [--renames 1]

``frac`` x (messages in the store) operations, split like a day on a real
server: ~55 % flag changes (a rename in ``cur/``; unseen mail in ``new/`` is
read and moves to ``cur/``), ~15 % expunges (unlink), ~5 % moves to another
folder of the same user (rename, same base name), ~25 % new deliveries of
realistic size (written to ``tmp/`` and renamed into ``new/``; some are one
mailing-list post delivered to several users). Then ``--renames`` folder
renames: ``.X`` and its children ``.X.*`` become ``.Y``, ``.Y.*``.

The store is listed in sorted order and every choice comes from
``random.Random(seed)``, so the same store and seed give the same result.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.generate import DAY, EPOCH_NOW, HOSTS
from benchmarks.maildir import (
    KEYWORD_LETTERS,
    encode_mutf7,
    folder_dirnames,
    folder_name,
    iter_maildirs,
    message_filename,
    message_files,
    read_keywords,
    sort_letters,
    split_filename,
)
from benchmarks.mailgen import MAILING_LISTS, Person, compose_list_message, compose_message, vsize
from benchmarks.progress import human_bytes

# The mix of one "1 %" round, as in the reference measurements.
SHARES = {"flags": 0.55, "expunges": 0.15, "moves": 0.05, "deliveries": 0.25}
LIST_DELIVERY_SHARE = 0.2
RENAME_TARGETS = ("Ablage", "Old Mail", "Unterlagen", "Référence", "Projects", "Erledigt",
                  "Kept", "Historique")


@dataclass(frozen=True, slots=True)
class Message:
    maildir: Path
    folder: str  # Maildir++ directory name, "" for INBOX
    sub: str  # "cur" or "new"
    name: str  # file name

    @property
    def path(self) -> Path:
        return self.maildir / self.folder / self.sub / self.name


@dataclass(frozen=True, slots=True)
class FolderRename:
    maildir: Path
    old: str  # directory names, e.g. ".Archive.2024" -> ".Ablage.2024"
    new: str


@dataclass
class MutationReport:
    seed: int
    frac: float
    messages_before: int = 0
    flag_changes: int = 0
    expunges: int = 0
    moves: int = 0
    deliveries: int = 0
    delivered_bytes: int = 0
    moved_bytes: int = 0
    renames: list[FolderRename] = field(default_factory=list)
    renamed_messages: int = 0
    renamed_bytes: int = 0

    @property
    def operations(self) -> int:
        return self.flag_changes + self.expunges + self.moves + self.deliveries

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["renames"] = [
            {"maildir": str(r.maildir), "old": r.old, "new": r.new} for r in self.renames]
        data["operations"] = self.operations
        return data

    def summary(self) -> str:
        return (f"{self.operations:,} operations on {self.messages_before:,} messages: "
                f"{self.flag_changes} flag changes, {self.expunges} expunges, {self.moves} moves "
                f"({human_bytes(self.moved_bytes)}), {self.deliveries} deliveries "
                f"({human_bytes(self.delivered_bytes)}), {len(self.renames)} folders renamed "
                f"({self.renamed_messages} messages, {human_bytes(self.renamed_bytes)})")


def split_counts(total: int) -> dict[str, int]:
    """Operations per kind, summing to ``total`` (largest remainders)."""
    exact = {kind: total * share for kind, share in SHARES.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    left = total - sum(counts.values())
    for kind in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[:left]:
        counts[kind] += 1
    return counts


def list_store(root: Path) -> tuple[list[Path], list[Message]]:
    maildirs: list[Path] = []
    messages: list[Message] = []
    for user in iter_maildirs(root):
        maildirs.append(user.path)
        for folder in folder_dirnames(user.path):
            for sub, name in message_files(user.path / folder):
                messages.append(Message(user.path, folder, sub, name))
    return maildirs, messages


def _owner_of(path: Path) -> tuple[int, int] | None:
    """Keep new files owned like the folder (vmail), when we are root."""
    st = path.stat()
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        return st.st_uid, st.st_gid
    return None


def _new_flags(rng: random.Random, letters: str, keyword_count: int) -> str:
    """A different, plausible set of flag letters."""
    if "S" not in letters:
        return sort_letters(letters + "S")  # the commonest change: mail gets read
    choices = ["F", "R", "F", "T"]
    if keyword_count:
        choices.extend(KEYWORD_LETTERS[:keyword_count] * 2)
    letter = rng.choice(choices)
    changed = letters.replace(letter, "") if letter in letters else letters + letter
    return sort_letters(changed)


def _deliver(maildir: Path, folder: str, data: bytes, *, when: int, rng: random.Random,
             used: set[str]) -> Path:
    while True:
        base = message_filename(secs=when, usecs=rng.randrange(1_000_000),
                                pid=rng.randrange(1000, 65000), host=rng.choice(HOSTS),
                                size=len(data), vsize=vsize(data), flags=None)
        if base not in used:
            used.add(base)
            break
    fdir = maildir / folder
    tmp = fdir / "tmp" / base
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        owner = _owner_of(fdir)
        if owner:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    os.utime(tmp, (when, when))
    final = fdir / "new" / base
    os.rename(tmp, final)
    return final


def _rename_folder(rng: random.Random, maildirs: list[Path]) -> list[FolderRename]:
    candidates: list[tuple[Path, str]] = []
    for maildir in maildirs:
        names = folder_dirnames(maildir)
        for d in names:
            if d and d.count(".") == 1:  # top level: ".Archive", not ".Archive.2024"
                candidates.append((maildir, d))
    if not candidates:
        return []
    maildir, old = rng.choice(candidates)
    existing = set(folder_dirnames(maildir))
    targets = [t for t in RENAME_TARGETS if "." + encode_mutf7(t) not in existing]
    new = "." + encode_mutf7(rng.choice(targets) if targets else f"Renamed {rng.randrange(10**6)}")
    moves = [FolderRename(maildir, d, new + d[len(old):])
             for d in sorted(existing) if d == old or d.startswith(old + ".")]
    # Children first is not needed (they are siblings on disk); any order works.
    for move in moves:
        os.rename(maildir / move.old, maildir / move.new)
    return moves


def mutate_store(root: Path, *, frac: float, seed: int, renames: int = 1) -> MutationReport:
    """Apply one round of changes to the store at ``root``; see the module doc."""
    rng = random.Random(f"bundlesync-bench-mutate:{seed}")
    report = MutationReport(seed=seed, frac=frac)
    maildirs, messages = list_store(root)
    report.messages_before = len(messages)
    counts = split_counts(round(frac * len(messages)))
    used: dict[Path, set[str]] = {m: set() for m in maildirs}
    for msg in messages:
        used[msg.maildir].add(split_filename(msg.name)[0])

    touched = rng.sample(messages, k=min(len(messages),
                                         counts["flags"] + counts["expunges"] + counts["moves"]))
    flagged = touched[: counts["flags"]]
    expunged = touched[counts["flags"] : counts["flags"] + counts["expunges"]]
    moved = touched[counts["flags"] + counts["expunges"] :]

    keywords: dict[tuple[Path, str], int] = {}
    for msg in flagged:
        key = (msg.maildir, msg.folder)
        if key not in keywords:
            keywords[key] = len(read_keywords(msg.maildir / msg.folder))
        base, letters = split_filename(msg.name)
        new_letters = _new_flags(rng, letters, keywords[key])
        os.rename(msg.path, msg.maildir / msg.folder / "cur" / f"{base}:2,{new_letters}")
        report.flag_changes += 1
    for msg in expunged:
        os.unlink(msg.path)
        report.expunges += 1
    for msg in moved:
        folders = [f for f in folder_dirnames(msg.maildir) if f != msg.folder]
        if not folders:
            continue
        target = rng.choice(folders)
        base, letters = split_filename(msg.name)
        dest = msg.maildir / target / "cur" / f"{base}:2,{letters}"
        if dest.exists():  # same base name already there: not a move a server would do
            continue
        report.moved_bytes += msg.path.stat().st_size
        os.rename(msg.path, dest)
        report.moves += 1

    remaining = counts["deliveries"]
    base_time = EPOCH_NOW + DAY * (1 + seed % 3650)
    while remaining > 0 and maildirs:
        when = base_time + rng.randrange(DAY)
        if rng.random() < LIST_DELIVERY_SHARE and len(maildirs) > 1:
            # One list post to several subscribers: identical bytes in each.
            readers = rng.sample(maildirs, k=min(remaining, len(maildirs), rng.randint(2, 4)))
            data = compose_list_message(rng, when=when, mlist=rng.choice(MAILING_LISTS))
            for maildir in readers:
                folders = folder_dirnames(maildir)
                target = ".Lists" if ".Lists" in folders and rng.random() < 0.5 else ""
                _deliver(maildir, target, data, when=when, rng=rng, used=used[maildir])
                report.deliveries += 1
                report.delivered_bytes += len(data)
            remaining -= len(readers)
            continue
        maildir = rng.choice(maildirs)
        folders = folder_dirnames(maildir)
        # Mostly INBOX; now and then a client saves into another folder.
        target = "" if rng.random() < 0.85 else rng.choice(folders)
        role = "sent" if target == ".Sent" else "inbox"
        owner = Person(maildir.parent.name.capitalize(),
                       f"{maildir.parent.name}@{maildir.parent.parent.name}")
        data = compose_message(rng, when=when, owner=owner, role=role)
        _deliver(maildir, target, data, when=when, rng=rng, used=used[maildir])
        report.deliveries += 1
        report.delivered_bytes += len(data)
        remaining -= 1

    for _ in range(renames):
        moves = _rename_folder(rng, maildirs)
        report.renames.extend(moves)
        for move in moves:
            for sub, name in message_files(move.maildir / move.new):
                report.renamed_messages += 1
                report.renamed_bytes += (move.maildir / move.new / sub / name).stat().st_size
    return report


def renamed_folder_names(report: MutationReport) -> list[tuple[str, str]]:
    """Decoded (old, new) folder names of the renames, for messages to people."""
    return [(folder_name(r.old), folder_name(r.new)) for r in report.renames]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--frac", type=float, default=0.01,
                        help="operations as a fraction of the messages in the store")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--renames", type=int, default=1, help="folder renames (with children)")
    args = parser.parse_args(argv)
    report = mutate_store(args.store, frac=args.frac, seed=args.seed, renames=args.renames)
    print(report.summary())
    for old, new in renamed_folder_names(report):
        print(f"renamed folder {old!r} -> {new!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FolderRename", "MutationReport", "mutate_store", "split_counts"]
