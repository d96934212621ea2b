"""The site's configuration file, ``<home>/bundlesync.toml``.

A small, hand-editable TOML file::

    [site]
    name = "alpha"
    store = "/var/vmail/%d/%n/Maildir"

    [filters]
    include = []                  # mailbox patterns; empty = everything
    exclude = ["Trash", "Junk*"]  # fnmatch patterns on "Parent/Child" names
    iinclude = []                 # the same, ignoring case ("trash" matches "Trash")
    iexclude = []

    [warnings]
    silent_peer_days = 14         # status warns when a peer was not heard from for longer

    [limits]                      # optional; defaults in formats/bundle-v1.md section 9.2
    max_message_size = 104857600  # bytes per message (larger ones are skipped, with a warning)
    max_new_users = 1000          # user Maildirs one import may create
    max_new_folders = 1000        # folders one import may create per user
    max_folder_depth = 32         # levels of a folder path
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bundlesync.errors import ConfigError
from bundlesync.format.limits import SiteLimits
from bundlesync.fsio import atomic_write
from bundlesync.operations.users import UserMatcher
from bundlesync.stores.base import FolderPath

CONFIG_NAME = "bundlesync.toml"


@dataclass(frozen=True, slots=True)
class MailboxFilter:
    """Which mailboxes take part, by fnmatch patterns on their names ("A/B").

    ``iinclude``/``iexclude`` are the same patterns compared without regard to case.
    No pattern at all means every mailbox.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    iinclude: tuple[str, ...] = ()
    iexclude: tuple[str, ...] = ()

    def wants(self, path: FolderPath) -> bool:
        name = "/".join(path)
        folded = name.casefold()

        def hit(text: str, pattern: str) -> bool:
            return fnmatch.fnmatchcase(text, pattern) or fnmatch.fnmatchcase(text, pattern + "/*")

        if (self.include or self.iinclude) and not (
                any(fnmatch.fnmatchcase(name, p) for p in self.include)
                or any(fnmatch.fnmatchcase(folded, p.casefold()) for p in self.iinclude)):
            return False
        return not (any(hit(name, p) for p in self.exclude)
                    or any(hit(folded, p.casefold()) for p in self.iexclude))

    def merged(self, *, include: Sequence[str], exclude: Sequence[str],
               iinclude: Sequence[str] = (), iexclude: Sequence[str] = ()) -> MailboxFilter:
        return MailboxFilter(self.include + tuple(include), self.exclude + tuple(exclude),
                             self.iinclude + tuple(iinclude), self.iexclude + tuple(iexclude))


@dataclass(frozen=True, slots=True)
class SiteConfig:
    name: str
    store: str
    filters: MailboxFilter = field(default_factory=MailboxFilter)
    silent_peer_days: int = 14
    limits: SiteLimits = field(default_factory=SiteLimits)
    # Chosen per run (-u, --users-file), never stored: the default is every user.
    users: UserMatcher = field(default_factory=UserMatcher)

    def with_filters(self, *, include: Sequence[str], exclude: Sequence[str],
                     iinclude: Sequence[str] = (), iexclude: Sequence[str] = ()) -> SiteConfig:
        return replace(self, filters=self.filters.merged(
            include=include, exclude=exclude, iinclude=iinclude, iexclude=iexclude))


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything we write.
    return json.dumps(value, ensure_ascii=False)


def _toml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def write_config(path: Path, config: SiteConfig) -> None:
    text = (
        "# bundlesync site configuration\n"
        "[site]\n"
        f"name = {_toml_string(config.name)}\n"
        f"store = {_toml_string(config.store)}\n\n"
        "[filters]\n"
        "# fnmatch patterns on mailbox names such as \"Archive/2024\"\n"
        f"include = {_toml_list(config.filters.include)}\n"
        f"exclude = {_toml_list(config.filters.exclude)}\n"
        "# the same, ignoring case\n"
        f"iinclude = {_toml_list(config.filters.iinclude)}\n"
        f"iexclude = {_toml_list(config.filters.iexclude)}\n\n"
        "[warnings]\n"
        f"silent_peer_days = {config.silent_peer_days}\n\n"
        "[limits]\n"
        f"max_message_size = {config.limits.max_message_size}\n"
        f"max_new_users = {config.limits.max_new_users}\n"
        f"max_new_folders = {config.limits.max_new_folders}\n"
        f"max_folder_depth = {config.limits.max_folder_depth}\n"
    )
    try:
        # A temporary name of its own and a synced directory: a crash leaves the old
        # configuration or the new one, and two writers never share a temporary file.
        atomic_write(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write the configuration {path}: {exc.strerror or exc}",
                          hint="Check free space and permissions of the site's home.") from None


def read_config(path: Path) -> SiteConfig:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"this site has no configuration ({path} is missing)") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"the configuration {path} cannot be read: {exc}",
            hint="Fix the file (it is TOML), or move it away and run 'bundlesync init' again.",
        ) from exc
    try:
        site = data["site"]
        filters = data.get("filters", {})
        warnings = data.get("warnings", {})
        return SiteConfig(
            name=str(site["name"]),
            store=str(site["store"]),
            filters=MailboxFilter(
                tuple(str(p) for p in filters.get("include", [])),
                tuple(str(p) for p in filters.get("exclude", [])),
                tuple(str(p) for p in filters.get("iinclude", [])),
                tuple(str(p) for p in filters.get("iexclude", [])),
            ),
            silent_peer_days=int(warnings.get("silent_peer_days", 14)),
            limits=_limits(data.get("limits", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"the configuration {path} lacks or garbles a setting: {exc}",
            hint="Compare it with the example in docs/tutorial.md.",
        ) from exc


def _limits(section: dict[str, object]) -> SiteLimits:
    """The ``[limits]`` section: positive integers; a missing one keeps its default."""
    defaults = SiteLimits()
    values: dict[str, int] = {}
    for name in ("max_message_size", "max_new_users", "max_new_folders", "max_folder_depth"):
        raw = section.get(name, getattr(defaults, name))
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ValueError(f"[limits] {name} must be a positive whole number, not {raw!r}")
        values[name] = raw
    unknown = set(section) - set(values)
    if unknown:
        raise ValueError(f"[limits] has unknown settings: {', '.join(sorted(unknown))}")
    return SiteLimits(**values)
