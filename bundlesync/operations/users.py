"""Choosing users by mask, as ``doveadm -u`` and ``doveadm -F`` do.

A mask is a user name, or a pattern with ``*`` (any run of characters) and ``?``
(one character); ``@example.org`` alone means every user of that domain (the
same as ``*@example.org``). The domain part is compared without regard to case
(domains are case-insensitive); the local part exactly, as Dovecot's userdb
does. A users file holds one user (or mask) per line -- the first
tab-separated field, so ``doveadm user -m`` style output can be used -- with
blank lines and ``#`` comments ignored; ``-`` reads standard input.

No mask at all means every user: the default skips nothing. The matcher is a
value (:class:`UserMatcher`) that the replication and the backup commands share.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundlesync.errors import UsageError

STDIN = "-"


def _split(name: str) -> tuple[str, str | None]:
    local, at, domain = name.rpartition("@")
    return (local, domain) if at else (name, None)


@dataclass(frozen=True, slots=True)
class UserMask:
    """One mask, normalised: ``@dom`` becomes ``*@dom``."""

    text: str

    @classmethod
    def parse(cls, text: str) -> UserMask:
        mask = text.strip()
        if not mask:
            raise UsageError("an empty user mask was given",
                             hint="Give a user (alice@example.org), a pattern "
                                  "('*@example.org', 'a?ice*') or '@example.org'.")
        if any(ch in mask for ch in "\0\n\r"):
            raise UsageError(f"the user mask {text!r} holds a control character")
        if mask.startswith("@"):
            mask = "*" + mask
        return cls(mask)

    @property
    def is_pattern(self) -> bool:
        return any(ch in self.text for ch in "*?[")

    def matches(self, user: str) -> bool:
        local, domain = _split(self.text)
        user_local, user_domain = _split(user)
        if domain is None:
            return fnmatch.fnmatchcase(user, self.text)
        if user_domain is None:
            return False
        return (fnmatch.fnmatchcase(user_local, local)
                and fnmatch.fnmatchcase(user_domain.lower(), domain.lower()))


@dataclass(frozen=True, slots=True)
class UserMatcher:
    """Which users take part in a run; no masks means everyone."""

    masks: tuple[UserMask, ...] = ()

    @classmethod
    def from_masks(cls, masks: Iterable[str]) -> UserMatcher:
        return cls(tuple(UserMask.parse(m) for m in masks))

    @property
    def everyone(self) -> bool:
        return not self.masks

    def matches(self, user: str) -> bool:
        return self.everyone or any(m.matches(user) for m in self.masks)

    def select(self, users: Iterable[str]) -> list[str]:
        """The matching users, in the order given."""
        return [u for u in users if self.matches(u)]

    def unmatched(self, users: Iterable[str]) -> list[str]:
        """Masks naming one exact user that is not among ``users`` (a likely typo)."""
        present = set(users)
        return [m.text for m in self.masks if not m.is_pattern and m.text not in present]

    def describe(self) -> str:
        return "every user" if self.everyone else ", ".join(m.text for m in self.masks)


def parse_users_text(text: str) -> list[str]:
    """The masks a users file holds (first tab-separated field of each line)."""
    masks: list[str] = []
    for line in text.splitlines():
        field = line.split("\t", 1)[0].strip()
        if field and not field.startswith("#"):
            masks.append(field)
    return masks


def read_users_file(path: str) -> list[str]:
    """Read a users file; ``-`` is standard input."""
    try:
        text = sys.stdin.read() if path == STDIN else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"the users file {path} does not exist",
                         hint="Check the path; the file lists one user or mask per line.",
                         ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"the users file {path} cannot be read: {exc}",
                         hint="It must be a readable UTF-8 text file, one user per line.",
                         ) from None
    masks = parse_users_text(text)
    if not masks:
        raise UsageError(f"the users file {path} names no user",
                         hint="Write one user or mask per line; '#' starts a comment.")
    return masks


def user_matcher(masks: Sequence[str] = (), files: Sequence[str] = ()) -> UserMatcher:
    """The matcher for ``-u MASK`` options and ``--users-file FILE`` options together."""
    every = list(masks)
    for path in files:
        every.extend(read_users_file(path))
    return UserMatcher.from_masks(every)
