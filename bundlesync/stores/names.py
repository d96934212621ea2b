"""Checks on every name that becomes part of a path, and new message keys.

A user name, folder path or message key may come from a bundle written at
another site. Before a store builds a path from one, it passes these checks, so
that no name can leave the store (``..``, ``/``), hide itself (a leading dot),
corrupt Dovecot's files (control characters, ``:`` in a key) or exceed what a
file system holds (over 200 bytes per component).
"""

from __future__ import annotations

import itertools
import os
import socket

from bundlesync.stores.base import FolderPath
from bundlesync.stores.errors import UnsafeName

MAX_COMPONENT_BYTES = 200

# Characters that end an IMAP atom or are reserved in one (RFC 3501 §9,
# atom-specials and list-wildcards): a keyword holding one could not be sent
# over IMAP, and a space would break the dovecot-keywords line format.
_KEYWORD_SPECIALS = frozenset('(){ %*"\\]')

_key_counter = itertools.count(1)


def _has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


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


def _host_part() -> str:
    # Maildir spec: "/" and ":" in the host name are written as octal escapes.
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072")


def new_message_key(*, now_ns: int) -> str:
    """A fresh message key in Dovecot's pattern ``<secs>.M<usecs>P<pid>Q<n>.<host>``.

    Unique on this host: the counter ``n`` grows within the process, the pid
    separates processes and the time separates pid reuse.
    """
    secs, rest_ns = divmod(now_ns, 1_000_000_000)
    return f"{secs}.M{rest_ns // 1000}P{os.getpid()}Q{next(_key_counter)}.{_host_part()}"


__all__ = [
    "MAX_COMPONENT_BYTES",
    "check_folder_path",
    "check_key",
    "check_keyword",
    "check_user",
    "new_message_key",
]
