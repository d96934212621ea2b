"""Checks on every name that becomes part of a path, and new message keys.

A user name, folder path or message key may come from a bundle written at
another site. Before a store builds a path from one, it passes these checks, so
that no name can leave the store (``..``, ``/``), hide itself (a leading dot),
corrupt Dovecot's files (control characters, ``:`` in a key) or exceed what a
file system holds (over 200 bytes per component).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
import socket

from bundlesync.stores import mutf7
from bundlesync.stores.base import FolderPath
from bundlesync.stores.errors import UnsafeName

MAX_COMPONENT_BYTES = 200
MAX_DIR_NAME_BYTES = 255

# Characters that end an IMAP atom or are reserved in one (RFC 3501 §9,
# atom-specials and list-wildcards): a keyword holding one could not be sent
# over IMAP, and a space would break the dovecot-keywords line format.
_KEYWORD_SPECIALS = frozenset('(){ %*"\\]')

_key_counter = itertools.count(1)


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _has_control(text: str) -> bool:
    # A regular expression, not a loop over the characters: every name of every
    # delivered message passes here, several times.
    return _CONTROL.search(text) is not None


def _check_component(text: str, *, what: str) -> None:
    if not text:
        raise UnsafeName(f"empty {what} name")
    if text in {".", ".."}:
        raise UnsafeName(f"{what} name {text!r} would leave its directory")
    if "/" in text or "\0" in text:
        raise UnsafeName(f"{what} name {text!r} holds '/' or NUL")
    if _has_control(text):
        raise UnsafeName(f"{what} name {text!r} holds a control character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise UnsafeName(f"{what} name {text!r} is not valid Unicode") from exc
    if size > MAX_COMPONENT_BYTES:
        raise UnsafeName(f"{what} name {text[:40]!r}... is {size} bytes long (at most 200)")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe message key (file base name), else raise UnsafeName.

    A key never starts with "." (hidden and temporary files) and never holds
    ":" (the Maildir info separator, which starts the flags part).
    """
    _check_component(key, what="message key")
    if key.startswith("."):
        raise UnsafeName(f"message key {key!r} starts with '.'")
    if ":" in key:
        raise UnsafeName(f"message key {key!r} holds ':', the Maildir flag separator")
    return key


def check_user(user: str) -> str:
    """Return ``user`` if it is a safe user name (one path component at most)."""
    _check_component(user, what="user")
    if user.startswith("."):
        raise UnsafeName(f"user name {user!r} starts with '.'")
    return user


def check_folder_path(path: FolderPath) -> FolderPath:
    """Return ``path`` if every component is a safe folder name, else raise UnsafeName.

    "." cannot occur in a component: it is the Maildir++ hierarchy separator on
    disk (Dovecot refuses such names too), and "/" is refused for the same reason.
    A first component spelling INBOX in another case ("Inbox") is refused: IMAP
    names INBOX case-insensitively, so it would be ambiguous with the inbox.
    """
    if not isinstance(path, tuple) or not path:
        raise UnsafeName(f"folder path {path!r} must be a non-empty tuple of names")
    for component in path:
        if not isinstance(component, str):
            raise UnsafeName(f"folder path {path!r} holds a non-text component")
        _check_component(component, what="folder")
        if "." in component:
            raise UnsafeName(
                f"folder name {component!r} holds '.', the Maildir++ hierarchy separator",
                hint="Rename the folder at the sending site; Dovecot cannot store it either.",
            )
    if path[0] != "INBOX" and path[0].upper() == "INBOX":
        raise UnsafeName(f"folder path {path!r} spells INBOX in another case")
    return path


def check_keyword(keyword: str) -> str:
    """Return ``keyword`` if it is a keyword an IMAP server and dovecot-keywords can hold."""
    if not keyword or len(keyword) > MAX_COMPONENT_BYTES:
        raise UnsafeName(f"keyword {keyword[:40]!r} is empty or too long")
    if any(not "!" <= char <= "~" or char in _KEYWORD_SPECIALS for char in keyword):
        raise UnsafeName(
            f"keyword {keyword!r} holds a space, a non-ASCII, control or IMAP special character"
        )
    return keyword


# --- names a peer sent that this store cannot hold ---------------------------------------
#
# A name another site can hold but a Maildir++ store cannot ("a.b", "..", 201 bytes,
# a non-ASCII keyword) must not fail the user's whole apply on every import. It is
# stored under a *storable* name, computed from the name alone -- so every site
# maps it the same way -- while the merged state keeps the original. The state
# index records the folder under the storable path and the file under the stored
# flags, so the next scan sees no rename and no flag change (the name round-trips).

_SUFFIX_HEX = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_SUFFIX_HEX]


def _fit(text: str, original: str, budget: int) -> str:
    """``text`` cut to ``budget`` UTF-8 bytes with room for ``~<hash of original>``."""
    suffix = "~" + _digest(original)
    room = budget - len(suffix)
    cut = text.encode("utf-8")[:room].decode("utf-8", "ignore")
    return cut + suffix


def storable_folder_name(name: str, *, first: bool = False) -> str:
    """A folder name component a Maildir++ store can hold, deterministic; ``name``
    itself when it can be held as it is.

    Characters that cannot be held ("." "/" NUL, control characters) become "_",
    an over-long name is cut; a changed name gets "~" and 8 hex digits of the
    SHA-256 of the original, so two names never meet under one mapping.
    ``first``: the first component, where another spelling of INBOX is not held.
    """
    try:
        check_folder_path((name,) if first else ("INBOX", name))
    except UnsafeName:
        pass
    else:
        return name
    cleaned = "".join("_" if (c in "./\0" or ord(c) < 0x20 or ord(c) == 0x7F
                              or 0xD800 <= ord(c) <= 0xDFFF) else c for c in name)
    return _fit(cleaned or "_", name, MAX_COMPONENT_BYTES)


def storable_path(path: FolderPath) -> FolderPath:
    """:func:`storable_folder_name` of every component (INBOX stays INBOX)."""
    if path == ("INBOX",):
        return path
    # The whole path is one directory name on disk (".A.B.C" in modified UTF-7, at
    # most 255 bytes). Each component is cut so that the path up to it fits: a
    # folder's parent then has the same name on its own as inside the child's path.
    # Where even a short component cannot fit, the failure remains (reported).
    return _storable_path(path)[0]


@functools.lru_cache(maxsize=4096)
def _storable_path(path: FolderPath) -> tuple[FolderPath, int]:
    """(storable path, bytes of its ".A.B" directory name); the parent's from the cache,
    so a whole tree costs one step per folder."""
    if not path:
        return (), 0
    parent, size = _storable_path(path[:-1])
    component = path[-1]
    name = storable_folder_name(component, first=len(path) == 1)
    while (size + 1 + len(mutf7.encode(name)) > MAX_DIR_NAME_BYTES
           and len(name) > _SUFFIX_HEX + 2 and size < MAX_DIR_NAME_BYTES):
        stem = name if name == component else name[: -(_SUFFIX_HEX + 1)]
        stem = stem[:-1]
        name = _fit(stem, component, len(stem.encode("utf-8")) + _SUFFIX_HEX + 1)
    return (*parent, name), size + 1 + len(mutf7.encode(name))


def storable_keyword(keyword: str) -> str:
    """A keyword an IMAP server and ``dovecot-keywords`` can hold, deterministic;
    ``keyword`` itself when it can be held as it is (see :func:`storable_folder_name`)."""
    try:
        return check_keyword(keyword)
    except UnsafeName:
        pass
    cleaned = "".join(c if "!" <= c <= "~" and c not in _KEYWORD_SPECIALS else "_"
                      for c in keyword)
    return _fit(cleaned or "_", keyword, 64)


def storable_flags(flags: frozenset[str], *, system: frozenset[str]) -> frozenset[str]:
    """The flags as a Maildir can hold them: keywords through :func:`storable_keyword`;
    a system flag not in ``system`` cannot be held and is left out."""
    return frozenset(
        flag if flag in system else storable_keyword(flag)
        for flag in flags if not flag.startswith("\\") or flag in system
    )


def _host_part() -> str:
    # Maildir spec: "/" and ":" in the host name are written as octal escapes.
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072")


# The pid and host parts of new keys, taken once per process: each os.getpid()
# and gethostname() is a system call, and a first transfer names every message
# it delivers. A forked child takes its own pid.
_process_parts: list[tuple[int, str]] = []


os.register_at_fork(after_in_child=_process_parts.clear)


def new_message_key(*, now_ns: int) -> str:
    """A fresh message key in Dovecot's pattern ``<secs>.M<usecs>P<pid>Q<n>.<host>``.

    Unique on this host: the counter ``n`` grows within the process, the pid
    separates processes and the time separates pid reuse.
    """
    if not _process_parts:
        _process_parts.append((os.getpid(), _host_part()))
    pid, host = _process_parts[0]
    secs, rest_ns = divmod(now_ns, 1_000_000_000)
    return f"{secs}.M{rest_ns // 1000}P{pid}Q{next(_key_counter)}.{host}"


__all__ = [
    "MAX_COMPONENT_BYTES",
    "check_folder_path",
    "check_key",
    "check_keyword",
    "check_user",
    "new_message_key",
    "storable_flags",
    "storable_folder_name",
    "storable_keyword",
    "storable_path",
]
