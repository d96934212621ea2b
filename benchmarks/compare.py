"""Does a copy hold the same mail as the source?

A copy is compared as a multiset of (user, folder name, SHA-256 of the
message bytes, flag names). File names are not compared: dsync may write
its own names (it keeps the GUID in ``dovecot-uidlist`` instead), and the
content hash identifies a message whatever it is called. Flags are compared
as IMAP names, each side's keyword letters read through its own folder's
``dovecot-keywords``. Which subdirectory (``new/`` or ``cur/``) a message is in
does not count: Dovecot moves files to ``cur/`` when it touches them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmarks.maildir import (
    flag_names,
    folder_dirnames,
    folder_name,
    iter_maildirs,
    message_files,
    read_keywords,
    split_filename,
)
from benchmarks.progress import Progress

Entry = tuple[str, str, str, tuple[str, ...]]


def inventory(root: Path, progress: Progress | None = None) -> Counter[Entry]:
    found: Counter[Entry] = Counter()
    done = 0
    nbytes = 0
    for user in iter_maildirs(root):
        who = f"{user.domain}/{user.user}"
        for folder in folder_dirnames(user.path):
            fdir = user.path / folder
            keywords = read_keywords(fdir)
            name = folder_name(folder)
            for sub, filename in message_files(fdir):
                data = (fdir / sub / filename).read_bytes()
                letters = split_filename(filename)[1]
                flags = tuple(sorted(flag_names(letters, keywords)))
                found[(who, name, hashlib.sha256(data).hexdigest(), flags)] += 1
                done += 1
                nbytes += len(data)
                if progress is not None:
                    progress.update(done, nbytes)
    return found


@dataclass(frozen=True, slots=True)
class Mismatch:
    missing: int  # in the source, not in the copy
    extra: int  # in the copy, not in the source

    @property
    def total(self) -> int:
        return self.missing + self.extra


def compare(source: Counter[Entry], copy: Counter[Entry]) -> Mismatch:
    return Mismatch(missing=sum((source - copy).values()), extra=sum((copy - source).values()))


def listing(root: Path) -> set[str]:
    """Every message file path under root (names only: cheap)."""
    names: set[str] = set()
    for user in iter_maildirs(root):
        for folder in folder_dirnames(user.path):
            for sub, filename in message_files(user.path / folder):
                names.add(f"{user.domain}/{user.user}/{folder}/{sub}/{filename}")
    return names
