"""A live store written by Dovecot, and what Dovecot reports about a store."""

from __future__ import annotations

from pathlib import Path

from tests.dovecot import Dovecot

MAILBOXES = ["INBOX", "Archive", "Archive.2024", "Sent"]


def mail(number: int, size: int = 0) -> bytes:
    return (
        f"From: sender{number}@example.org\nTo: alice@example.org\n"
        f"Message-ID: <r{number}@example.org>\nSubject: restore test {number}\n\n"
        f"Body {number}.\n{'x' * size}\n"
    ).encode()


def build_live(dovecot: Dovecot, maildir: Path) -> None:
    """A store Dovecot wrote: UIDs with gaps, flags, keywords, nested folders."""
    dovecot.create_mailbox(maildir, "Archive", "Archive.2024", "Sent")
    dovecot.subscribe(maildir, "INBOX", "Archive.2024")
    number = 0
    for mailbox, count in (("INBOX", 6), ("Archive.2024", 3), ("Sent", 2)):
        for _ in range(count):
            number += 1
            dovecot.save(maildir, mailbox, mail(number))
    dovecot.flags_add(maildir, "INBOX", "\\Seen $Label1", "uid", "2")
    dovecot.flags_add(maildir, "INBOX", "\\Flagged \\Answered Work", "uid", "3")
    dovecot.flags_add(maildir, "Archive.2024", "\\Seen \\Deleted", "uid", "1")
    dovecot.expunge(maildir, "INBOX", "uid", "4")  # a gap in the UIDs
    dovecot.expunge(maildir, "Sent", "uid", "1")


def fetch_state(dovecot: Dovecot, maildir: Path) -> list[tuple[str, str, str, frozenset[str]]]:
    rows = dovecot.fetch(maildir, "mailbox guid uid flags")
    return sorted(
        (row["mailbox"], row["uid"], row["guid"],
         frozenset(flag for flag in row["flags"].split() if flag != "\\Recent"))
        for row in rows
    )


def mailbox_state(dovecot: Dovecot, maildir: Path, mailbox: str) -> tuple[str, str, str]:
    text = dovecot.doveadm(maildir, "-f", "tab", "mailbox", "status",
                           "guid uidvalidity uidnext", mailbox)
    header, values = text.splitlines()[:2]
    row = dict(zip(header.split("\t"), values.split("\t"), strict=True))
    return row["guid"], row["uidvalidity"], row["uidnext"]
