"""Where each user's Maildir lives: a plain path or a Dovecot-style template.

``/srv/mail/alice/Maildir`` is one user's store (the user has the empty name).
``/var/vmail/%d/%n/Maildir`` or ``/srv/mail/%u/Maildir`` hold many users:
``%u`` is the full user name, ``%n`` its local part and ``%d`` its domain
(``%{user}``, ``%{username}``, ``%{domain}`` are the long forms; ``%%`` is a
literal percent sign). With ``%n`` or ``%d`` user names are ``local@domain``.
A leading ``maildir:`` is accepted, as in Dovecot's ``mail_location``; other
options (``:LAYOUT=``, ``:INDEX=``...) and ``~`` are not supported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from bundlesync.stores.errors import UnknownUser, UnsafeName, UnsupportedLocation
from bundlesync.stores.names import check_user

_VARIABLE = re.compile(r"%(\{[a-z]+\}|.)", re.DOTALL)
_NAMES = {"u": "u", "n": "n", "d": "d", "{user}": "u", "{username}": "n", "{domain}": "d"}
# What a variable may match in a directory name when users are enumerated.
_PATTERNS = {"u": r"[^/]+", "n": r"[^/@]+", "d": r"[^/@]+"}


@dataclass(frozen=True, slots=True)
class _Part:
    """One path component of the template: literal text and variables."""

    pieces: tuple[tuple[str, str], ...]  # ("text", literal) or ("var", name)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(value for kind, value in self.pieces if kind == "var")

    def expand(self, values: dict[str, str]) -> str:
        return "".join(values[value] if kind == "var" else value for kind, value in self.pieces)

    def regex(self) -> re.Pattern[str]:
        pattern = "".join(
            f"(?P<v{index}>{_PATTERNS[value]})" if kind == "var" else re.escape(value)
            for index, (kind, value) in enumerate(self.pieces)
        )
        return re.compile(pattern)


def _parse_part(text: str) -> _Part:
    pieces: list[tuple[str, str]] = []
    position = 0
    for match in _VARIABLE.finditer(text):
        if match.start() > position:
            pieces.append(("text", text[position : match.start()]))
        spec = match.group(1)
        if spec == "%":
            pieces.append(("text", "%"))
        elif spec in _NAMES:
            pieces.append(("var", _NAMES[spec]))
        else:
            raise UnsupportedLocation(f"mail location variable %{spec} is not supported")
        position = match.end()
    if position < len(text):
        pieces.append(("text", text[position:]))
    merged: list[tuple[str, str]] = []
    for piece in pieces:
        if merged and piece[0] == "text" and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + piece[1])
        else:
            merged.append(piece)
    return _Part(tuple(merged))


@dataclass(frozen=True, slots=True)
class MailLocation:
    """A parsed mail location: maps user names to Maildir paths and back."""

    template: str
    parts: tuple[_Part, ...]

    @classmethod
    def parse(cls, location: str) -> MailLocation:
        """Parse ``location``; UnsupportedLocation if it is not a form we handle."""
        text = location.removeprefix("maildir:")
        if ":" in text:
            raise UnsupportedLocation(
                f"mail location {location!r} has options (':...'); only the Maildir path "
                "is supported (Maildir++ layout, Dovecot's files inside the Maildir)"
            )
        if not text.startswith("/"):
            raise UnsupportedLocation(
                f"mail location {location!r} is not an absolute path",
                hint="Write the full path, e.g. /var/vmail/%d/%n/Maildir (no '~').",
            )
        components = [component for component in text.split("/") if component]
        parts = tuple(_parse_part(component) for component in components)
        location_ = cls(template=text, parts=parts)
        used = location_.variables
        if "d" in used and "n" not in used and "u" not in used:
            raise UnsupportedLocation(
                f"mail location {location!r} uses %d without %n or %u: users cannot be told apart"
            )
        return location_

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(variable for part in self.parts for variable in part.variables)

    @property
    def single_user(self) -> bool:
        """True for a plain path: one user, whose name is ""."""
        return not self.variables

    @property
    def static_root(self) -> str:
        """The directory above the first variable component (the store root)."""
        fixed = []
        for part in self.parts:
            if part.variables:
                break
            fixed.append(part.expand({}))
        return "/" + "/".join(fixed)

    def _values(self, user: str) -> dict[str, str]:
        used = self.variables
        if self.single_user:
            if user != "":
                raise UnknownUser(
                    f"this store holds one user (named \"\"), not {user!r}",
                    hint="Use a template such as /var/vmail/%d/%n/Maildir for many users.",
                )
            return {}
        check_user(user)
        local, at, domain = user.partition("@")
        if "d" in used:
            if not at or not local or not domain or "@" in domain:
                raise UnknownUser(
                    f"user {user!r} is not of the form local@domain, as %d in the template needs"
                )
        elif "n" in used and at and "u" not in used:
            raise UnknownUser(
                f"user {user!r} holds '@' but the template has only %n: two such users would "
                "share one Maildir"
            )
        for piece in (local, domain):
            if piece.startswith(".") or piece in {".", ".."}:
                raise UnsafeName(f"user {user!r} has a part starting with '.'")
        return {"u": user, "n": local, "d": domain}

    def path_for(self, user: str) -> str:
        """The Maildir path of ``user`` (checked: it cannot leave the template's shape)."""
        values = self._values(user)
        return "/" + "/".join(part.expand(values) for part in self.parts)

    def users(self) -> list[str]:
        """Every user whose Maildir directory exists, sorted. Unsafe names are skipped."""
        if self.single_user:
            return [""] if os.path.isdir(self.path_for("")) else []
        found: set[str] = set()
        self._walk("/", 0, {}, found)
        return sorted(found)

    def _walk(self, directory: str, index: int, values: dict[str, str], found: set[str]) -> None:
        if index == len(self.parts):
            user = self._user_from(values)
            if user is not None and os.path.isdir(directory):
                found.add(user)
            return
        part = self.parts[index]
        if not part.variables:
            self._walk(os.path.join(directory, part.expand({})), index + 1, values, found)
            return
        regex = part.regex()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return  # a missing or unreadable level holds no users
        for entry in entries:
            if entry.name.startswith("."):
                continue
            match = regex.fullmatch(entry.name)
            if match is None:
                continue
            bound = dict(values)
            consistent = True
            for group, variable in zip(match.groupdict(), part.variables, strict=True):
                value = match.group(group)
                if bound.setdefault(variable, value) != value:
                    consistent = False
            if consistent and entry.is_dir():
                self._walk(entry.path, index + 1, bound, found)

    def _user_from(self, values: dict[str, str]) -> str | None:
        if "u" in values:
            user = values["u"]
        elif "d" in values:
            user = f"{values['n']}@{values['d']}"
        else:
            user = values["n"]
        try:
            expected = self._values(user)
        except (UnknownUser, UnsafeName):
            return None
        if any(expected[name] != value for name, value in values.items()):
            return None
        return user
