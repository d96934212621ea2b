"""IMAP modified UTF-7 (RFC 3501 §5.1.3), the encoding of Maildir++ folder names.

Printable US-ASCII (0x20-0x7e) stands for itself, except ``&`` which is written
``&-``. Any run of other characters is UTF-16BE, base64-encoded with ``,`` in
place of ``/`` and no padding, between ``&`` and ``-``.

:func:`decode` accepts only the canonical form (the one :func:`encode` writes):
a folder directory name must map to exactly one Unicode name and back, or a
rename or delivery could address a different directory than the one listed.
"""

from __future__ import annotations

import base64
import binascii
import re

from bundlesync.stores.errors import InvalidMailboxName

_B64_CHUNK = re.compile(r"[A-Za-z0-9+,]*")


def _is_direct(char: str) -> bool:
    return " " <= char <= "~"


def _encode_run(run: str) -> str:
    try:
        raw = run.encode("utf-16-be")
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-16 form
        raise InvalidMailboxName(f"folder name {run!r} holds an unpaired surrogate") from exc
    return "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"


def encode(name: str) -> str:
    """The modified UTF-7 form of ``name``."""
    out: list[str] = []
    run_start = -1
    for index, char in enumerate(name):
        if _is_direct(char):
            if run_start >= 0:
                out.append(_encode_run(name[run_start:index]))
                run_start = -1
            out.append("&-" if char == "&" else char)
        elif run_start < 0:
            run_start = index
    if run_start >= 0:
        out.append(_encode_run(name[run_start:]))
    return "".join(out)


def _decode_run(chunk: str, whole: str) -> str:
    if not chunk or _B64_CHUNK.fullmatch(chunk) is None or len(chunk) % 4 == 1:
        raise InvalidMailboxName(f"folder name {whole!r} is not valid modified UTF-7")
    padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
        text = raw.decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidMailboxName(f"folder name {whole!r} is not valid modified UTF-7") from exc
    # Canonical form only: no leftover bits, no directly representable character
    # hidden in base64.
    if any(_is_direct(char) for char in text) or _encode_run(text) != f"&{chunk}-":
        raise InvalidMailboxName(f"folder name {whole!r} is not in canonical modified UTF-7")
    return text


def decode(encoded: str) -> str:
    """The Unicode name of a modified UTF-7 string; InvalidMailboxName if not canonical."""
    out: list[str] = []
    index = 0
    previous_was_run = False
    length = len(encoded)
    while index < length:
        char = encoded[index]
        if not _is_direct(char):
            raise InvalidMailboxName(
                f"folder name {encoded!r} holds a character outside printable ASCII"
            )
        if char != "&":
            out.append(char)
            index += 1
            previous_was_run = False
            continue
        end = encoded.find("-", index + 1)
        if end < 0:
            raise InvalidMailboxName(f"folder name {encoded!r} has an unterminated '&'")
        if end == index + 1:
            out.append("&")
            previous_was_run = False
        else:
            if previous_was_run:
                # Two adjacent runs must have been written as one.
                raise InvalidMailboxName(
                    f"folder name {encoded!r} is not in canonical modified UTF-7"
                )
            out.append(_decode_run(encoded[index + 1 : end], encoded))
            previous_was_run = True
        index = end + 1
    return "".join(out)
