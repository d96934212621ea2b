"""The small text formats Dovecot keeps in a Maildir, parsed and written without I/O.

* message file names: ``<base>[,<extra>...][:2,<flag letters>[,<more>]]``;
* ``dovecot-keywords``: ``<index> <name>`` lines, letter ``a`` is index 0;
* ``dovecot-uidlist`` (version 3): header ``3 V<uidvalidity> N<next uid> G<guid>``,
  records ``<uid> [<ext>...] :<base name>`` where ext ``G<guid>`` is the message GUID;
* ``subscriptions``: ``V\\t2\\n\\n`` then one name a line, components joined by
  TAB (tab-escaped), each in modified UTF-7; version 1 has no header and
  joins components with the hierarchy separator ".".

Facts observed on Dovecot 2.3.19; the layout as a whole is described in
:mod:`bundlesync.stores.maildir`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bundlesync.core.model import ANSWERED, DELETED, DRAFT, FLAGGED, PASSED, SEEN
from bundlesync.stores import mutf7
from bundlesync.stores.errors import InvalidMailboxName

FLAGS_SEPARATOR = ":2,"
MAX_KEYWORDS = 26  # letters a..z: Dovecot's limit for keywords in Maildir file names
SUBSCRIPTIONS_V2_HEADER = "V\t2\n\n"

LETTER_TO_FLAG: Mapping[str, str] = {
    "D": DRAFT,
    "F": FLAGGED,
    "P": PASSED,
    "R": ANSWERED,
    "S": SEEN,
    "T": DELETED,
}
FLAG_TO_LETTER: Mapping[str, str] = {flag: letter for letter, flag in LETTER_TO_FLAG.items()}

_SIZE_FIELD = re.compile(r",S=(\d+)")
_VSIZE_FIELD = re.compile(r",W=(\d+)")


# --- message file names ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileName:
    """A message file name split into the parts bundlesync reads and writes.

    ``letters`` are the characters between ``:2,`` and the next ``,``;
    ``more`` is anything after that comma (another flag set Dovecot keeps as is).
    A name without ``:2,`` has no letters.
    """

    key: str
    letters: str
    more: str = ""

    @classmethod
    def parse(cls, name: str) -> FileName:
        key, sep, info = name.partition(":")
        if not sep or not info.startswith("2,"):
            return cls(key=key, letters="")
        letters, comma, more = info[2:].partition(",")
        return cls(key=key, letters=letters, more=comma + more)

    def with_letters(self, letters: str) -> str:
        """The file name with ``letters`` as its flag letters."""
        return f"{self.key}{FLAGS_SEPARATOR}{letters}{self.more}"


def key_of(name: str) -> str:
    """The key (base name) of a message file name: everything before the first ":"."""
    return name.partition(":")[0]


def size_from_key(key: str) -> int | None:
    """The ``S=<size>`` field Dovecot puts into base names, if present."""
    match = _SIZE_FIELD.search(key)
    return int(match.group(1)) if match else None


def vsize_from_key(key: str) -> int | None:
    """The ``W=<size>`` field: the size with every LF counted as CRLF (IMAP's RFC822.SIZE)."""
    match = _VSIZE_FIELD.search(key)
    return int(match.group(1)) if match else None


def misstated_size(key: str, data: bytes) -> str | None:
    """What is wrong if ``key``'s S=/W= fields do not describe ``data``, else None.

    Dovecot trusts these fields instead of the file: a wrong one makes it report
    wrong sizes (IMAP clients then cut messages short).
    """
    size = size_from_key(key)
    if size is not None and size != len(data):
        return f"S={size} but the message has {len(data)} bytes"
    vsize = vsize_from_key(key)
    if vsize is not None:
        # Mail in a Maildir has bare LF line ends: a search for CR (memchr) is
        # cheaper than counting the two-byte CRLF.
        crlf = data.count(b"\r\n") if b"\r" in data else 0
        actual = len(data) + data.count(b"\n") - crlf
        if vsize != actual:
            return f"W={vsize} but the message has {actual} bytes with CRLF line ends"
    return None


def letters_to_flags(letters: str, keywords: Mapping[int, str]) -> frozenset[str]:
    """The flag names of ``letters``; unknown letters (no keyword mapped) are skipped."""
    flags: set[str] = set()
    for letter in letters:
        system = LETTER_TO_FLAG.get(letter)
        if system is not None:
            flags.add(system)
        elif "a" <= letter <= "z":
            name = keywords.get(ord(letter) - ord("a"))
            if name is not None:
                flags.add(name)
    return frozenset(flags)


def unknown_letters(letters: str, keywords: Mapping[int, str]) -> str:
    """The letters of ``letters`` that name no flag we know: kept as they are on rename."""
    kept = []
    for letter in letters:
        if letter in LETTER_TO_FLAG:
            continue
        if "a" <= letter <= "z" and (ord(letter) - ord("a")) in keywords:
            continue
        kept.append(letter)
    return "".join(kept)


def compose_letters(known: Iterable[str], kept: str) -> str:
    """Flag letters in the order Dovecot requires: sorted by ASCII code, no repeats."""
    return "".join(sorted(set(known) | set(kept)))


# --- dovecot-keywords --------------------------------------------------------------------


def parse_keywords(text: str) -> dict[int, str]:
    """Index -> keyword name. Lines that are not ``<0..25> <name>`` are skipped, like Dovecot."""
    result: dict[int, str] = {}
    for line in text.splitlines():
        number, sep, name = line.partition(" ")
        if not sep or not name or not number.isdigit():
            continue
        index = int(number)
        if index < MAX_KEYWORDS:
            result[index] = name
    return result


def format_keywords(keywords: Mapping[int, str]) -> str:
    """The dovecot-keywords text for ``keywords`` (ordered by index)."""
    return "".join(f"{index} {keywords[index]}\n" for index in sorted(keywords))


def keyword_index(keywords: Mapping[int, str], name: str) -> int | None:
    """The index of keyword ``name``; names compare without regard to case, as in Dovecot."""
    folded = name.lower()
    for index in sorted(keywords):
        if keywords[index].lower() == folded:
            return index
    return None


def next_keyword_index(keywords: Mapping[int, str]) -> int | None:
    """The index a new keyword gets (after the highest in use), or None when all 26 are taken.

    Gaps are not reused: a letter without a name may still be in some file names.
    """
    candidate = max(keywords, default=-1) + 1
    return candidate if candidate < MAX_KEYWORDS else None


# --- dovecot-uidlist ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UidlistHeader:
    """What the first line of dovecot-uidlist says about the mailbox."""

    version: int
    uidvalidity: int | None
    next_uid: int | None
    guid: str | None


_GUID_HEX = re.compile(r"[0-9a-f]{32}")


def parse_uidlist_header(line: str) -> UidlistHeader | None:
    """Parse the header line of dovecot-uidlist; None if it is not one we understand."""
    fields = line.split()
    if not fields or not fields[0].isdigit():
        return None
    version = int(fields[0])
    if version == 1:
        # "1 <uidvalidity> <next uid>" (Dovecot 1.0)
        if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
            return UidlistHeader(1, int(fields[1]) or None, int(fields[2]), None)
        return None
    if version not in (2, 3):
        return None
    uidvalidity = next_uid = None
    guid = None
    for field in fields[1:]:
        tag, value = field[:1], field[1:]
        if tag == "V" and value.isdigit():
            uidvalidity = int(value) or None
        elif tag == "N" and value.isdigit():
            next_uid = int(value)
        elif tag == "G" and _GUID_HEX.fullmatch(value.lower()):
            guid = value.lower()
    return UidlistHeader(version, uidvalidity, next_uid, guid)


def parse_uidlist_guids(text: str) -> dict[str, str]:
    """Base name -> message GUID for the records that carry a ``G`` extension.

    Records without one have GUID == base name, so they are left out. The
    base name is what precedes the first ":" of the record's file name.
    """
    result: dict[str, str] = {}
    lines = text.split("\n")
    for line in lines[1:]:
        if " G" not in line:
            continue
        head, sep, filename = line.partition(" :")
        if not sep:
            continue
        for field in head.split(" ")[1:]:
            if field.startswith("G") and len(field) > 1:
                result[filename.partition(":")[0]] = field[1:]
                break
    return result


def format_uidlist_header(*, uidvalidity: int, guid: str | None) -> str:
    """The dovecot-uidlist of a new, empty mailbox: Dovecot adopts its GUID and UIDVALIDITY."""
    line = f"3 V{uidvalidity} N1"
    if guid is not None:
        line += f" G{guid}"
    return line + "\n"


# --- subscriptions -----------------------------------------------------------------------

_TAB_UNESCAPES = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


def _tab_unescape(text: str) -> str:
    if "\x01" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\x01" and index + 1 < len(text):
            out.append(_TAB_UNESCAPES.get(text[index + 1], text[index + 1]))
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _decode_components(encoded: Iterable[str]) -> tuple[str, ...] | None:
    try:
        path = tuple(mutf7.decode(component) for component in encoded)
    except InvalidMailboxName:
        return None
    if not path or any(not component for component in path):
        return None
    if path[0].upper() == "INBOX":
        path = ("INBOX", *path[1:])
    return path


def parse_subscriptions(text: str) -> set[tuple[str, ...]]:
    """The subscribed folder paths. Names that are not valid modified UTF-7 are skipped."""
    result: set[tuple[str, ...]] = set()
    if text.startswith(SUBSCRIPTIONS_V2_HEADER):
        for line in text[len(SUBSCRIPTIONS_V2_HEADER) :].split("\n"):
            if line:
                path = _decode_components(_tab_unescape(part) for part in line.split("\t"))
                if path is not None:
                    result.add(path)
    else:
        for line in text.split("\n"):
            if line:
                path = _decode_components(line.split("."))
                if path is not None:
                    result.add(path)
    return result


def format_subscriptions(paths: Iterable[tuple[str, ...]]) -> str:
    """The version 2 subscriptions file for ``paths`` (sorted, one a line)."""
    lines = sorted({"\t".join(mutf7.encode(component) for component in path) for path in paths})
    return SUBSCRIPTIONS_V2_HEADER + "".join(line + "\n" for line in lines)


@dataclass(frozen=True, slots=True)
class UidlistRecord:
    """One message line of dovecot-uidlist: its UID, file base name and GUID if other."""

    uid: int
    key: str
    guid: str | None = None  # only when the message GUID is not the base name


def format_uidlist(
    *, uidvalidity: int, next_uid: int, guid: str | None, records: Iterable[UidlistRecord]
) -> str:
    """A whole version 3 dovecot-uidlist: the header, then one record per message.

    Records are written in UID order (Dovecot requires it); ``next_uid`` is raised
    above the highest UID so that Dovecot never hands out a UID twice.
    """
    ordered = sorted(records, key=lambda record: record.uid)
    highest = ordered[-1].uid if ordered else 0
    line = f"3 V{uidvalidity} N{max(next_uid, highest + 1)}"
    if guid is not None:
        line += f" G{guid}"
    lines = [line]
    for record in ordered:
        # A GUID with a space or control character cannot be written in a record: left
        # out, Dovecot takes the base name as the GUID (which only loses that GUID).
        writable = record.guid is not None and all(" " < char != "\x7f" for char in record.guid)
        extension = f" G{record.guid}" if writable else ""
        lines.append(f"{record.uid}{extension} :{record.key}")
    return "\n".join(lines) + "\n"
