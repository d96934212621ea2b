"""Realistic message bytes, reproducible from a ``random.Random``.

Every random choice is taken from the generator passed in, so the same seed
gives the same bytes on every run and machine. The ``email`` package is not
used to build messages: it draws MIME boundaries from the global ``random``
(and is slow); boundaries here come from the seeded generator.

Shape of the output, chosen to resemble a real mail server's store:

* text bodies of Zipf-distributed words (English, or German with umlauts in
  UTF-8 quoted-printable), 7bit or QP, in ``text/plain`` or
  ``multipart/alternative`` with an HTML part;
* a share of ``multipart/mixed`` with base64 attachments (mostly 4-120 KB,
  a small tail of 150 KB-5 MB) whose bytes are random, like JPEG/ZIP/PDF;
* full header blocks: ``Received`` chains, DKIM signatures, RFC 2047 encoded
  non-ASCII names and subjects, replies with ``In-Reply-To``/``References``;
* mailing-list messages without per-recipient headers, so the copies that land
  in several users' folders are byte-identical.

Files are written with LF line ends, as Dovecot stores them.
"""

from __future__ import annotations

import base64
import binascii
import math
import random
import sys
from array import array
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, formataddr
from functools import cache

# ---------------------------------------------------------------- vocabulary

_ENGLISH_TEXT = """
the of and to a in is that for it as was with be by on not he I this are or his from at
which but have an they you were her she there been one all we their has would when if so
no will can more about out up them what some time could into only other new then its than
two may do first any like now my such these over man also most me did after should through
made where very well our between work before way just used because good much how those each
please thanks regards attached meeting server report invoice project update schedule review
draft budget question answer agenda minutes deadline customer order delivery contract team
week month today tomorrow yesterday morning afternoon call notes backup mailbox folder disk
network storage policy account password access release version change request ticket issue
plan figure table summary details data results test build deploy migration ship station
supply weather crew logistics satellite window shift transfer archive copy sync drive stick
office department manager colleague proposal price offer quote payment receipt confirm
"""

_GERMAN_TEXT = """
der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an
werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum
war haben nur oder aber vor zur bis mehr durch man sein wurde sei wenn können hier schon
Grüße Rückmeldung Besprechung Übersicht Änderung Größe Prüfung Lösung Tür Bücher Gebühr
Bitte danke Anhang Termin Angebot Rechnung Bestellung Lieferung Vertrag Woche Monat heute
morgen gestern Bericht Protokoll Frist Kunde Projekt Mannschaft Station Versorgung Wetter
Schiff Fähre Ausrüstung Überprüfung Sicherung Postfach Ordner Datenträger Zugang Kennwort
Veröffentlichung Änderungswunsch Störung Ablauf Übergabe Empfänger Absender Zuständigkeit
müssen würde könnte möchten gemäß bezüglich übermorgen nächste Öffnungszeiten Straße
"""

_SYLLABLES_TEXT = """
ka ri to mo ne sa lu pe vi da go ze ha ni ko be ra mi tu so la fe di po ke na ru si ta me
bor den tal ver ant mis pro lek sta gri fon tur mar ben dol kas zin har wel nor rim sel
"""
# Word lists are kept as running text: easier to read and extend.
_ENGLISH = _ENGLISH_TEXT.split()
_GERMAN = _GERMAN_TEXT.split()
_SYLLABLES = _SYLLABLES_TEXT.split()

_FIRST = [
    "Anna", "Björn", "Chloé", "Dmitri", "Elif", "François", "Greta", "Hiroshi", "Ingrid",
    "Jürgen", "Kasia", "Lars", "María", "Noah", "Oskar", "Paula", "Quentin", "Rosa", "Søren",
    "Tomás", "Ulla", "Vera", "Wojciech", "Xenia", "Yusuf", "Zoë", "Łukasz", "Ana", "Ben", "Eva",
]
_LAST = [
    "Schmidt", "Müller", "Nørgaard", "García", "O'Brien", "Lefèvre", "Kowalski", "Sato", "Smith",
    "Öztürk", "Jansen", "Rossi", "Novák", "Andersson", "Weiß", "Dubois", "Costa", "Ivanova",
    "Brown", "Hoffmann", "Çelik", "Virtanen", "Horváth", "Byrne", "Fischer", "Meyer",
]
_DOMAINS = [
    "example.com", "example.net", "example.org", "mail.example", "firma.example",
    "uni.example.edu", "polar.example.aq", "ship.example.int", "lab.example.de",
]
_ENGLISH_SUBJECTS = [
    "Weekly status report", "Minutes of the meeting", "Invoice {n}", "Your order {n}",
    "Backup window tonight", "Crew rotation schedule", "Question about the budget",
    "Updated agenda", "Draft proposal for review", "Supply list for the next ship",
    "Satellite link outage", "Ticket {n}: mailbox quota", "Photos from the trip",
    "Contract renewal", "Release {n} notes", "Lunch on Friday?", "Migration plan v{n}",
]
_GERMAN_SUBJECTS = [
    "Rückmeldung zum Angebot", "Besprechung am Donnerstag", "Übersicht Lieferungen {n}",
    "Änderung der Öffnungszeiten", "Rechnung Nr. {n}", "Prüfung der Sicherung",
    "Grüße aus der Station", "Übergabe Schicht {n}", "Störung im Postfach",
]
_SPAM_SUBJECTS = [
    "You have won!!!", "Cheap meds, fast shipping", "URGENT: verify your account",
    "Lowest price on {n} watches", "Re: your invoice is overdue",
]


@dataclass(frozen=True, slots=True)
class MailingList:
    name: str
    address: str
    host: str

    @property
    def list_id(self) -> str:
        local, _, domain = self.address.partition("@")
        return f"{local}.{domain}"


MAILING_LISTS: tuple[MailingList, ...] = (
    MailingList("Dovecot users", "dovecot@lists.example.org", "lists.example.org"),
    MailingList("Station announcements", "announce@polar.example.aq", "polar.example.aq"),
    MailingList("Python developers", "python-dev@lists.example.net", "lists.example.net"),
    MailingList("Betriebsrat", "betriebsrat@firma.example", "firma.example"),
    MailingList("All staff", "all-staff@example.com", "example.com"),
)


@dataclass(frozen=True, slots=True)
class Person:
    display: str
    address: str

    def header(self) -> str:
        return formataddr((self.display, self.address), charset="utf-8")


def _ascii_local(text: str) -> str:
    table = str.maketrans({
        "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e", "ç": "c", "ø": "o",
        "á": "a", "ł": "l", "ë": "e", "ő": "o", "Ł": "l", "Ö": "oe", "Ç": "c", "Ø": "o",
        "í": "i", "ó": "o", "ú": "u", "ñ": "n", "å": "a", "ć": "c", "ś": "s", "ż": "z",
        "'": "", " ": ".",
    })
    # Anything not covered above is dropped: addresses stay ASCII.
    return text.lower().translate(table).encode("ascii", "ignore").decode("ascii")


def random_person(rng: random.Random) -> Person:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    address = f"{_ascii_local(first)}.{_ascii_local(last)}@{rng.choice(_DOMAINS)}"
    return Person(f"{first} {last}", address)


# ----------------------------------------------------------------- word tables

_TABLE_SIZE = 65536  # one slot per 16-bit value: a word costs two random bytes


def _pseudo_words(count: int) -> list[str]:
    # A fixed local generator: the vocabulary is part of the program, not of the seed.
    local = random.Random(20240601)
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < count:
        word = "".join(local.choice(_SYLLABLES) for _ in range(local.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _zipf_table(ranked: list[str]) -> tuple[str, ...]:
    """65,536 slots where word of rank r fills a share proportional to 1/(r+3)."""
    weights = [1.0 / (r + 3) for r in range(len(ranked))]
    total = sum(weights)
    slots: list[str] = []
    for word, weight in zip(ranked, weights, strict=True):
        slots.extend([word] * max(1, round(weight * _TABLE_SIZE / total)))
    slots = slots[:_TABLE_SIZE]
    # Rounding leaves a few slots over or under: trim, or give them to the top word.
    slots.extend([ranked[0]] * (_TABLE_SIZE - len(slots)))
    # Punctuation on a fixed share of slots, then a fixed shuffle.
    for i in range(0, _TABLE_SIZE, 11):
        slots[i] += ","
    for i in range(5, _TABLE_SIZE, 14):
        slots[i] += "."
    random.Random(7).shuffle(slots)
    return tuple(slots)


@cache
def english_table() -> tuple[str, ...]:
    return _zipf_table(_ENGLISH + _pseudo_words(3000))


@cache
def german_table() -> tuple[str, ...]:
    return _zipf_table(_GERMAN + _ENGLISH[:40] + _pseudo_words(3000))


def words(rng: random.Random, table: tuple[str, ...], count: int) -> list[str]:
    """``count`` words drawn from ``table`` (two random bytes each: fast)."""
    idx = array("H")
    idx.frombytes(rng.randbytes(2 * count))
    if sys.byteorder == "big":  # same words on every machine
        idx.byteswap()
    return [table[i] for i in idx]


def paragraphs(rng: random.Random, table: tuple[str, ...], nbytes: int) -> list[str]:
    """Paragraphs of LF-wrapped lines totalling about ``nbytes`` characters."""
    count = max(12, nbytes // 7)
    pool = words(rng, table, count)
    shape = rng.randbytes(count // 9 + 2)
    paras: list[str] = []
    lines: list[str] = []
    pos = 0
    k = 0
    while pos < count:
        width = 8 + shape[k] % 5
        line = " ".join(pool[pos : pos + width])
        if not lines:
            line = line[:1].upper() + line[1:]
        lines.append(line)
        pos += width
        if shape[k] >= 200 or pos >= count:
            paras.append("\n".join(lines))
            lines = []
        k += 1
    return paras


# ------------------------------------------------------------------- MIME

def encode_header(value: str, name: str) -> str:
    """RFC 2047 encoding for non-ASCII header values (folded at 76)."""
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=76, header_name=name).encode()


def _boundary(rng: random.Random) -> str:
    return f"----=_Part_{rng.randrange(10**6)}_{rng.randrange(10**9)}.{rng.randrange(10**13)}"


def _date(when: int, rng: random.Random) -> str:
    offset = rng.choice((0, 60, 120, -300, -240, 330, 540))
    return format_datetime(datetime.fromtimestamp(when, timezone(timedelta(minutes=offset))))


def _text_part(text: str, subtype: str) -> bytes:
    raw = text.encode("utf-8")
    if raw.isascii() and max(map(len, text.splitlines() or [""])) < 900:
        head = f"Content-Type: text/{subtype}; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n"
        return head.encode() + b"\n" + raw
    head = (
        f"Content-Type: text/{subtype}; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n"
    )
    return head.encode() + b"\n" + binascii.b2a_qp(raw)


def _html(paras: list[str]) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paras)
    return (
        "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\n"
        "<style>body { font-family: Calibri, Arial, sans-serif; font-size: 11pt; }</style>\n"
        f"</head>\n<body>\n<div class=\"WordSection1\">\n{body}\n</div>\n</body>\n</html>\n"
    )


def _multipart(rng: random.Random, subtype: str, parts: list[bytes]) -> tuple[str, bytes]:
    boundary = _boundary(rng)
    chunks = [b"This is a multi-part message in MIME format.\n"]
    for part in parts:
        chunks.append(f"\n--{boundary}\n".encode())
        chunks.append(part.rstrip(b"\n") + b"\n")
    chunks.append(f"\n--{boundary}--\n".encode())
    return f'multipart/{subtype};\n\tboundary="{boundary}"', b"".join(chunks)


_ATTACHMENT_KINDS = (
    ("application/pdf", "pdf", b"%PDF-1.7\n"),
    ("image/jpeg", "jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("image/png", "png", b"\x89PNG\r\n\x1a\n"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx",
     b"PK\x03\x04"),
    ("application/zip", "zip", b"PK\x03\x04"),
)
_ATTACHMENT_STEMS = ("scan", "Bericht", "photo", "Übersicht", "invoice", "Protokoll", "plan")


def _attachment(rng: random.Random, size: int) -> bytes:
    ctype, ext, magic = rng.choice(_ATTACHMENT_KINDS)
    stem = rng.choice(_ATTACHMENT_STEMS)
    filename = f"{stem}_{rng.randrange(1, 999):03d}.{ext}"
    # Already-compressed formats: random bytes are the honest stand-in.
    data = magic + rng.randbytes(max(0, size - len(magic)))
    if filename.isascii():
        disposition = f'attachment;\n\tfilename="{filename}"'
        ctype_line = f'{ctype};\n\tname="{filename}"'
    else:
        quoted = "".join(
            c if (c.isascii() and c.isalnum()) or c in "._-" else "".join(
                f"%{b:02X}" for b in c.encode("utf-8"))
            for c in filename
        )
        disposition = f"attachment;\n\tfilename*=utf-8''{quoted}"
        ctype_line = f"{ctype};\n\tname*=utf-8''{quoted}"
    head = (
        f"Content-Type: {ctype_line}\nContent-Transfer-Encoding: base64\n"
        f"Content-Disposition: {disposition}\n"
    )
    return head.encode() + b"\n" + base64.encodebytes(data)


def _log_uniform(rng: random.Random, low: float, high: float) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


# Shares of the store that shape its size: ~24 KB per message on average, so
# the "medium" size (100,000 messages) is about 2.4 GB.
ATTACHMENT_SHARE = 0.12
LARGE_ATTACHMENT_SHARE = 0.006
ALTERNATIVE_SHARE = 0.40
GERMAN_SHARE = 0.25
REPLY_SHARE = 0.30


def _body(rng: random.Random, *, german: bool, text_bytes: int, attachments: list[int],
          signature: str, quoted: bool) -> tuple[str, str | None, bytes]:
    """(Content-Type, Content-Transfer-Encoding or None, body bytes)."""
    table = german_table() if german else english_table()
    paras = paragraphs(rng, table, text_bytes)
    greeting = "Hallo," if german else "Hi,"
    text_paras = [greeting, *paras]
    if quoted:
        old = paragraphs(rng, table, max(200, text_bytes // 2))
        text_paras.append("\n".join("> " + line for p in old for line in p.splitlines()))
    text = "\n\n".join(text_paras) + "\n\n-- \n" + signature + "\n"
    if rng.random() < ALTERNATIVE_SHARE:
        ctype, body = _multipart(rng, "alternative", [
            _text_part(text, "plain"), _text_part(_html(text_paras), "html")])
        top: tuple[str, str | None, bytes] = (ctype, None, body)
    else:
        part = _text_part(text, "plain")
        head, _, body = part.partition(b"\n\n")
        lines = head.decode().splitlines()
        top = (lines[0].split(": ", 1)[1], lines[1].split(": ", 1)[1], body)
    if not attachments:
        return top
    first = f"Content-Type: {top[0]}\n"
    if top[1]:
        first += f"Content-Transfer-Encoding: {top[1]}\n"
    parts = [first.encode() + b"\n" + top[2]]
    parts.extend(_attachment(rng, size) for size in attachments)
    ctype, body = _multipart(rng, "mixed", parts)
    return ctype, None, body


def _attachment_sizes(rng: random.Random, share: float) -> list[int]:
    roll = rng.random()
    if roll < LARGE_ATTACHMENT_SHARE:
        return [_log_uniform(rng, 150_000, 5_000_000)]
    if roll < LARGE_ATTACHMENT_SHARE + share:
        return [_log_uniform(rng, 4_000, 120_000) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    return []


def _message_id(rng: random.Random, when: int, domain: str) -> str:
    return f"<{when:x}.{rng.getrandbits(64):016x}@{domain}>"


def _received(rng: random.Random, when: int, by_host: str, rcpt: str | None) -> str:
    ip = f"{rng.choice((192, 198, 203))}.{rng.randrange(256)}.{rng.randrange(256)}." \
         f"{rng.randrange(1, 255)}"
    relay = f"mx{rng.randrange(1, 9)}.{rng.choice(_DOMAINS)}"
    qid = base64.b32encode(rng.randbytes(10)).decode().rstrip("=")
    for_part = f"\n\tfor <{rcpt}>" if rcpt else ""
    return (f"from {relay} ({relay} [{ip}])\n\tby {by_host} (Postfix) with ESMTPS id "
            f"{qid}{for_part}; {_date(when, rng)}")


def _dkim(rng: random.Random, domain: str, when: int) -> str:
    sig = base64.b64encode(rng.randbytes(256)).decode()
    folded = "\n\t ".join(sig[i : i + 70] for i in range(0, len(sig), 70))
    bh = base64.b64encode(rng.randbytes(32)).decode()
    return (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain};\n\ts=mail; t={when};\n\t"
            f"bh={bh};\n\th=From:To:Subject:Date:Message-ID:MIME-Version;\n\tb={folded}")


def _subject(rng: random.Random, *, german: bool, spam: bool) -> str:
    pool = _SPAM_SUBJECTS if spam else _GERMAN_SUBJECTS if german else _ENGLISH_SUBJECTS
    return rng.choice(pool).format(n=rng.randrange(100, 99999))


def _assemble(headers: list[tuple[str, str]], ctype: str, cte: str | None, body: bytes) -> bytes:
    head = "".join(f"{name}: {value}\n" for name, value in headers)
    head += f"MIME-Version: 1.0\nContent-Type: {ctype}\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\n"
    return head.encode("ascii") + b"\n" + body


def compose_message(rng: random.Random, *, when: int, owner: Person, role: str) -> bytes:
    """One personal message for ``owner``'s folder of the given role.

    Roles: ``inbox`` (received), ``sent`` (written by owner), ``drafts``,
    ``junk`` (spam). Archive and trash folders hold received mail.
    """
    german = rng.random() < GERMAN_SHARE
    outgoing = role in ("sent", "drafts")
    spam = role == "junk"
    other = random_person(rng)
    sender, rcpt = (owner, other) if outgoing else (other, owner)
    reply = not spam and rng.random() < REPLY_SHARE
    subject = _subject(rng, german=german, spam=spam)
    if reply:
        subject = ("AW: " if german else "Re: ") + subject
    text_bytes = _log_uniform(rng, 300, 4000) if role == "drafts" else _log_uniform(
        rng, 700, 14000)
    share = 0.15 if role == "sent" else ATTACHMENT_SHARE
    attachments = [] if spam else _attachment_sizes(rng, share)
    ctype, cte, body = _body(rng, german=german, text_bytes=text_bytes, attachments=attachments,
                             signature=sender.display, quoted=reply)
    sender_domain = sender.address.partition("@")[2]
    headers: list[tuple[str, str]] = []
    if not outgoing:
        headers.append(("Return-Path", f"<{sender.address}>"))
        headers.append(("Delivered-To", owner.address))
        own_host = f"mail.{owner.address.partition('@')[2]}"
        headers.append(("Received", _received(rng, when, own_host, owner.address)))
        headers.append(("Received", _received(rng, when - rng.randrange(1, 30),
                                                f"smtp.{sender_domain}", None)))
        headers.append(("DKIM-Signature", _dkim(rng, sender_domain, when)))
    headers.append(("From", sender.header()))
    headers.append(("To", rcpt.header()))
    if rng.random() < 0.2:
        headers.append(("Cc", ",\n\t".join(random_person(rng).header()
                                            for _ in range(rng.randint(1, 4)))))
    headers.append(("Subject", encode_header(subject, "Subject")))
    headers.append(("Date", _date(when, rng)))
    headers.append(("Message-ID", _message_id(rng, when, sender_domain)))
    if reply:
        parent = _message_id(rng, when - rng.randrange(600, 86400 * 5), rcpt.address.split("@")[1])
        headers.append(("In-Reply-To", parent))
        headers.append(("References", parent))
    if outgoing:
        headers.append(("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) "
                                      "Gecko/20100101 Thunderbird/128.5.0"))
    else:
        headers.append(("X-Spam-Status", "Yes, score=9.1" if spam else "No, score=-1.2"))
    return _assemble(headers, ctype, cte, body)


def compose_list_message(rng: random.Random, *, when: int, mlist: MailingList) -> bytes:
    """A mailing-list post as delivered to every subscriber: no per-user header."""
    german = mlist.host.endswith("firma.example")
    sender = random_person(rng)
    reply = rng.random() < 0.5
    subject = f"[{mlist.name.split()[0]}] " + ("Re: " if reply else "") + _subject(
        rng, german=german, spam=False)
    ctype, cte, body = _body(rng, german=german, text_bytes=_log_uniform(rng, 500, 9000),
                             attachments=[], signature=sender.display, quoted=reply)
    footer = (f"\n_______________________________________________\n{mlist.name} mailing list\n"
              f"{mlist.address}\nhttps://{mlist.host}/mailman/listinfo/{mlist.list_id}\n")
    if ctype.startswith("text/plain") and cte == "7bit":
        body = body.rstrip(b"\n") + b"\n" + footer.encode()
    headers = [
        ("Return-Path", f"<{mlist.address.replace('@', '-bounces@')}>"),
        ("Received", _received(rng, when, f"mail.{mlist.host}", None)),
        ("DKIM-Signature", _dkim(rng, mlist.host, when)),
        ("From", sender.header()),
        ("To", formataddr((mlist.name, mlist.address))),
        ("Subject", encode_header(subject, "Subject")),
        ("Date", _date(when, rng)),
        ("Message-ID", _message_id(rng, when, sender.address.partition("@")[2])),
        ("List-Id", f"{mlist.name} <{mlist.list_id}>"),
        ("List-Unsubscribe", f"<mailto:{mlist.address.replace('@', '-leave@')}>"),
        ("List-Archive", f"<https://{mlist.host}/pipermail/{mlist.list_id}/>"),
        ("Precedence", "list"),
        ("Sender", f'"{mlist.name}" <{mlist.address.replace("@", "-bounces@")}>'),
    ]
    return _assemble(headers, ctype, cte, body)


def vsize(data: bytes) -> int:
    """Size with CRLF line ends: what Dovecot puts in ``W=``."""
    return len(data) + data.count(b"\n")


__all__ = [
    "MAILING_LISTS",
    "MailingList",
    "Person",
    "compose_list_message",
    "compose_message",
    "random_person",
    "vsize",
]
