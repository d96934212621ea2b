"""Changes made directly in a user's Maildir, the way Dovecot and a mail client make them.

Nothing here goes through bundlesync: a delivery is written to ``tmp/`` and
renamed into ``new/`` (as an LDA does), a flag change is a rename into ``cur/``
with the letters of the Maildir name, a keyword is a letter mapped in the
folder's ``dovecot-keywords``, an expunge is an unlink, a move is a hard link
into the target folder under the same base name and an unlink, and folders are
Maildir++ directories (``.Parent.Child``) created with a fresh
``dovecot-uidlist`` (Dovecot writes one on first access), renamed together
with everything below them, and deleted without their children (IMAP DELETE).

Folder names here are plain ASCII, so no modified UTF-7 is needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from bundlesync.stores.dovecot_files import FLAG_TO_LETTER, LETTER_TO_FLAG

FolderPath = tuple[str, ...]
INBOX: FolderPath = ("INBOX",)


class MailClient:
    """One user's Maildir, changed as Dovecot would change it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- reading -------------------------------------------------------------------
    def folder_dir(self, path: FolderPath) -> Path:
        return self.root if path == INBOX else self.root / ("." + ".".join(path))

    def folders(self) -> list[FolderPath]:
        found = [INBOX]
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith(".") and entry not in (".", "..") and (
                    self.root / entry / "cur").is_dir():
                found.append(tuple(entry[1:].split(".")))
        return found

    def keywords(self, path: FolderPath) -> dict[int, str]:
        file = self.folder_dir(path) / "dovecot-keywords"
        if not file.exists():
            return {}
        out = {}
        for line in file.read_text().splitlines():
            number, _, name = line.partition(" ")
            out[int(number)] = name
        return out

    def files(self, path: FolderPath) -> dict[str, tuple[Path, frozenset[str]]]:
        """Base name -> (file, flags) of every message in the folder."""
        directory = self.folder_dir(path)
        keywords = self.keywords(path)
        out: dict[str, tuple[Path, frozenset[str]]] = {}
        for sub in ("new", "cur"):
            for name in os.listdir(directory / sub):
                key, _, letters = name.partition(":2,")
                flags = {LETTER_TO_FLAG[x] for x in letters if x in LETTER_TO_FLAG}
                flags |= {keywords[ord(x) - 97] for x in letters
                          if "a" <= x <= "z" and ord(x) - 97 in keywords}
                assert key not in out, f"two files for {key} in {path}"
                out[key] = (directory / sub / name, frozenset(flags))
        return out

    # --- messages ------------------------------------------------------------------
    def _letters(self, path: FolderPath, flags: frozenset[str]) -> str:
        keywords = self.keywords(path)
        numbers = {name.lower(): n for n, name in keywords.items()}
        letters = []
        for flag in sorted(flags):
            if flag in FLAG_TO_LETTER:
                letters.append(FLAG_TO_LETTER[flag])
                continue
            if flag.lower() not in numbers:
                # Dovecot adds a keyword under its uidlist lock; nothing else runs here.
                numbers[flag.lower()] = len(keywords)
                keywords[len(keywords)] = flag
                text = "".join(f"{n} {name}\n" for n, name in sorted(keywords.items()))
                tmp = self.folder_dir(path) / "dovecot-keywords.tmp"
                tmp.write_text(text)
                os.replace(tmp, self.folder_dir(path) / "dovecot-keywords")
            letters.append(chr(97 + numbers[flag.lower()]))
        return "".join(sorted(letters))

    def deliver(self, path: FolderPath, key: str, data: bytes) -> None:
        directory = self.folder_dir(path)
        tmp = directory / "tmp" / key
        tmp.write_bytes(data)
        os.rename(tmp, directory / "new" / key)

    def set_flags(self, path: FolderPath, key: str, flags: frozenset[str]) -> None:
        file, _ = self.files(path)[key]
        target = self.folder_dir(path) / "cur" / f"{key}:2,{self._letters(path, flags)}"
        os.rename(file, target)

    def expunge(self, path: FolderPath, key: str) -> None:
        os.unlink(self.files(path)[key][0])

    def move(self, source: FolderPath, target: FolderPath, key: str) -> None:
        file, flags = self.files(source)[key]
        name = f"{key}:2,{self._letters(target, flags)}"
        os.link(file, self.folder_dir(target) / "cur" / name)
        os.unlink(file)

    # --- folders -------------------------------------------------------------------
    def create_folder(self, path: FolderPath, uidvalidity: int) -> None:
        """A new folder; its GUID is derived from ``uidvalidity`` (unique per
        create) so that runs are repeatable."""
        guid = hashlib.sha256(f"folder {uidvalidity}".encode()).hexdigest()[:32]
        directory = self.folder_dir(path)
        for sub in ("cur", "new", "tmp"):
            (directory / sub).mkdir(parents=True)
        (directory / "maildirfolder").write_bytes(b"")
        (directory / "dovecot-uidlist").write_text(
            f"3 V{uidvalidity} N1 G{guid}\n")

    def rename_folder(self, old: FolderPath, new: FolderPath) -> None:
        """IMAP RENAME: the folder and everything below it."""
        moving = [p for p in self.folders() if p[: len(old)] == old]
        for path in sorted(moving, key=len):
            os.rename(self.folder_dir(path), self.folder_dir(new + path[len(old):]))

    def delete_folder(self, path: FolderPath) -> None:
        """IMAP DELETE: the folder and its mail; folders below it stay."""
        shutil.rmtree(self.folder_dir(path))
