"""Maildir++ conventions as Dovecot writes them, shared by the generator,
the mutator and the end-of-run comparison.

Layout of one user (``<root>/<domain>/<user>/Maildir``): INBOX is the Maildir
itself; every other folder is a directory ``.<name>`` beside ``cur/ new/ tmp/``
with the hierarchy separator ``.`` and non-ASCII names in IMAP's modified
UTF-7 (RFC 3501 §5.1.3), e.g. ``.Entw&APw-rfe`` for "Entwürfe".

A message file is ``<base>`` in ``new/`` or ``<base>:2,<flags>`` in ``cur/``;
flags are the uppercase system letters in ASCII order, then lowercase keyword
letters (``a`` = line 0 of the folder's ``dovecot-keywords``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INFO_SEPARATOR = ":2,"
KEYWORDS_FILE = "dovecot-keywords"
FOLDER_MARKER = "maildirfolder"
MESSAGE_SUBDIRS = ("cur", "new")

# Maildir letter -> IMAP system flag. "P" (passed) has no IMAP flag and dsync
# does not carry it, so the generator never writes it.
SYSTEM_LETTERS: dict[str, str] = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "\\Passed",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def encode_mutf7(name: str) -> str:
    """Encode a folder name in IMAP modified UTF-7 (``&`` becomes ``&-``)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{b64}-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """Inverse of :func:`encode_mutf7`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.index("-", i + 1)
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64).decode("utf-16-be"))
        i = end + 1
    return "".join(out)


def folder_dirname(name: str) -> str:
    """Directory name of a folder inside the Maildir ("" for INBOX)."""
    if name == "INBOX":
        return ""
    return "." + encode_mutf7(name)


def folder_name(dirname: str) -> str:
    """Decoded folder name of a Maildir++ directory name ("" is INBOX)."""
    if dirname == "":
        return "INBOX"
    return decode_mutf7(dirname[1:])


def message_filename(
    *, secs: int, usecs: int, pid: int, host: str, size: int, vsize: int, flags: str | None
) -> str:
    """The name Dovecot gives a delivered message; ``flags=None`` for ``new/``."""
    base = f"{secs}.M{usecs}P{pid}.{host},S={size},W={vsize}"
    return base if flags is None else f"{base}{INFO_SEPARATOR}{flags}"


def split_filename(filename: str) -> tuple[str, str]:
    """(base name, flag letters) of a message file; letters are "" if none."""
    base, sep, letters = filename.partition(INFO_SEPARATOR)
    return base, letters if sep else ""


def sort_letters(letters: str) -> str:
    """Flag letters in the order Dovecot writes them: system, then keywords."""
    upper = sorted({c for c in letters if c.isupper()})
    lower = sorted({c for c in letters if c.islower()})
    return "".join(upper + lower)


def read_keywords(folder: Path) -> dict[str, str]:
    """Keyword letter -> name from a folder's ``dovecot-keywords`` (may be absent)."""
    try:
        text = (folder / KEYWORDS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    mapping: dict[str, str] = {}
    for line in text.splitlines():
        index, _, name = line.partition(" ")
        if index.isdigit() and int(index) < len(KEYWORD_LETTERS) and name:
            mapping[KEYWORD_LETTERS[int(index)]] = name
    return mapping


def keywords_text(names: list[str]) -> str:
    return "".join(f"{i} {name}\n" for i, name in enumerate(names))


def flag_names(letters: str, keywords: dict[str, str]) -> frozenset[str]:
    """IMAP flag names of the letters of a file name (unknown letters kept visible)."""
    names: set[str] = set()
    for c in letters:
        if c in SYSTEM_LETTERS:
            names.add(SYSTEM_LETTERS[c])
        elif c.islower():
            names.add(keywords.get(c, f"unknown-{c}"))
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class UserMaildir:
    domain: str
    user: str
    path: Path


def iter_maildirs(root: Path) -> Iterator[UserMaildir]:
    """Every ``<root>/<domain>/<user>/Maildir``, in sorted order."""
    if not root.is_dir():
        return
    for domain in sorted(os.listdir(root)):
        ddir = root / domain
        if not ddir.is_dir():
            continue
        for user in sorted(os.listdir(ddir)):
            maildir = ddir / user / "Maildir"
            if maildir.is_dir():
                yield UserMaildir(domain, user, maildir)


def folder_dirnames(maildir: Path) -> list[str]:
    """Folder directory names of one Maildir, INBOX ("") first, then sorted."""
    subs = sorted(
        entry.name
        for entry in os.scandir(maildir)
        if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir()
    )
    return ["", *subs]


def message_files(folder: Path) -> list[tuple[str, str]]:
    """(subdir, file name) of every message in ``cur/`` and ``new/``, sorted."""
    found: list[tuple[str, str]] = []
    for sub in MESSAGE_SUBDIRS:
        try:
            names = os.listdir(folder / sub)
        except FileNotFoundError:
            continue
        found.extend((sub, name) for name in names if not name.startswith("."))
    found.sort()
    return found
