"""Which users a run covers: doveadm-style masks (``-u``) and a file of users.

A mask holds ``*`` (any run of characters) and ``?`` (one character), as
doveadm's ``-u`` does (``*@example.org``, ``a*``); anything else matches itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundlesync.errors import UsageError


def _compile(mask: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in mask]
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def is_mask(text: str) -> bool:
    return "*" in text or "?" in text


@dataclass(frozen=True, slots=True)
class UserSelection:
    """Masks and exact names; empty means every user of the store."""

    masks: tuple[str, ...] = ()

    @property
    def everyone(self) -> bool:
        return not self.masks

    def describe(self) -> str:
        """A stable text for the retention group (archive-v1 §9)."""
        return "all users" if self.everyone else " ".join(sorted(set(self.masks)))

    def select(self, present: Iterable[str]) -> tuple[list[str], list[str]]:
        """(users to back up, exact names asked for that the store does not hold)."""
        present = sorted(set(present))
        if self.everyone:
            return present, []
        patterns = [_compile(m) for m in self.masks if is_mask(m)]
        exact = {m for m in self.masks if not is_mask(m)}
        chosen = [u for u in present if u in exact or any(p.match(u) for p in patterns)]
        missing = sorted(exact - set(present))
        return chosen, missing


def read_users_file(path: Path) -> list[str]:
    """One user or mask per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read the users file {path}: {exc.strerror}.") from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def selection(masks: Sequence[str], users_file: Path | None) -> UserSelection:
    found = list(masks)
    if users_file is not None:
        found += read_users_file(users_file)
        if not found:
            raise UsageError(f"The users file {users_file} names no user.")
    return UserSelection(tuple(found))
