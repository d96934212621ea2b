"""What a run did (or, for a dry run, would do), in mail terms.

"alice@example.org  INBOX +312 -17, 1,204 flag changes" -- per user and mailbox --
plus mailboxes created, renamed and deleted, bodies still missing, users that
failed, and warnings. ``as_dict`` is the ``--json`` form.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bundlesync.core.model import MessageRef
from bundlesync.errors import BundlesyncError
from bundlesync.stores.base import FolderPath


def show_user(user: str) -> str:
    return user or "(store)"


def show_path(path: FolderPath) -> str:
    return "/".join(path)


@dataclass
class MailboxTally:
    added: int = 0
    expunged: int = 0
    flags: int = 0
    bytes_added: int = 0
    conflicts: int = 0


@dataclass
class ApplyReport:
    tallies: dict[tuple[str, FolderPath], MailboxTally] = field(
        default_factory=lambda: defaultdict(MailboxTally))
    mailboxes: list[dict[str, str]] = field(default_factory=list)
    subscription_changes: int = 0
    missing: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    # -- recording -------------------------------------------------------------------

    def message(self, user: str, path: FolderPath, what: str, *, size: int = 0) -> None:
        tally = self.tallies[(user, path)]
        if what == "added":
            tally.added += 1
            tally.bytes_added += size
        elif what == "expunged":
            tally.expunged += 1
        else:
            tally.flags += 1

    def conflict(self, user: str, path: FolderPath, count: int = 1) -> None:
        """A change that arrived and lost to a newer one already here."""
        self.tallies[(user, path)].conflicts += count

    def mailbox(self, user: str, path: FolderPath, what: str, *,
                old: FolderPath | None = None) -> None:
        entry = {"user": user, "mailbox": show_path(path), "action": what}
        if old is not None:
            entry["from"] = show_path(old)
        self.mailboxes.append(entry)

    def subscriptions(self, user: str, count: int) -> None:
        del user
        self.subscription_changes += count

    def missing_body(self, user: str, path: FolderPath, ref: MessageRef) -> None:
        self.missing.append(f"{show_user(user)} {show_path(path)} {ref.guid}")

    def fail(self, user: str, exc: BundlesyncError) -> None:
        self.failures[user] = f"{exc.message}" + (f" ({exc.hint})" if exc.hint else "")

    def fail_item(self, user: str, what: str, exc: BundlesyncError) -> None:
        """One message or folder failed; the rest of the user's changes go on."""
        self.failures[f"{show_user(user)} {what}"] = (
            f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""))

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def absorb(self, other: ApplyReport) -> None:
        """Add what ``other`` recorded (work done apart, kept once it was committed)."""
        for where, tally in other.tallies.items():
            mine = self.tallies[where]
            mine.added += tally.added
            mine.expunged += tally.expunged
            mine.flags += tally.flags
            mine.bytes_added += tally.bytes_added
            mine.conflicts += tally.conflicts
        self.mailboxes.extend(other.mailboxes)
        self.subscription_changes += other.subscription_changes
        self.missing.extend(other.missing)
        self.failures.update(other.failures)
        self.warnings.extend(other.warnings)

    # -- reading ---------------------------------------------------------------------

    @property
    def added(self) -> int:
        return sum(t.added for t in self.tallies.values())

    @property
    def expunged(self) -> int:
        return sum(t.expunged for t in self.tallies.values())

    @property
    def flag_changes(self) -> int:
        return sum(t.flags for t in self.tallies.values())

    @property
    def conflicts(self) -> int:
        return sum(t.conflicts for t in self.tallies.values())

    @property
    def empty(self) -> bool:
        return not (any(t.added or t.expunged or t.flags for t in self.tallies.values())
                    or self.mailboxes or self.subscription_changes)

    def lines(self) -> list[str]:
        out: list[str] = []
        for entry in self.mailboxes:
            what = entry["action"]
            text = f"{show_user(entry['user'])}  mailbox {entry['mailbox']} {what}"
            if "from" in entry:
                text += f" (was {entry['from']})"
            out.append(text)
        for (user, path), tally in sorted(self.tallies.items()):
            parts = []
            if tally.added or tally.expunged:
                parts.append(f"+{tally.added:,} -{tally.expunged:,}")
            if tally.flags:
                parts.append(f"{tally.flags:,} flag change{'s' if tally.flags != 1 else ''}")
            if tally.conflicts:
                parts.append(f"{tally.conflicts:,} conflict{'s' if tally.conflicts != 1 else ''}"
                             " (an older change lost to a newer one)")
            out.append(f"{show_user(user)}  {show_path(path)} {', '.join(parts)}")
        if self.subscription_changes:
            out.append(f"{self.subscription_changes} subscription change(s)")
        for text in self.missing:
            out.append(f"waiting for the body of {text} (it comes with a later bundle)")
        for user, text in sorted(self.failures.items()):
            out.append(f"FAILED for {show_user(user)}: {text}")
        out.extend(f"warning: {w}" for w in self.warnings)
        return out

    def summary(self) -> str:
        return (f"{self.added:,} message(s) added, {self.expunged:,} expunged, "
                f"{self.flag_changes:,} flag change(s), {len(self.mailboxes)} mailbox change(s)"
                + (f", {self.conflicts:,} conflict(s) resolved" if self.conflicts else ""))

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "expunged": self.expunged,
            "flag_changes": self.flag_changes,
            "conflicts": self.conflicts,
            "mailboxes": [
                {"user": u, "mailbox": show_path(p), "added": t.added, "expunged": t.expunged,
                 "flag_changes": t.flags, "bytes_added": t.bytes_added,
                 "conflicts": t.conflicts}
                for (u, p), t in sorted(self.tallies.items())
            ],
            "mailbox_changes": self.mailboxes,
            "subscription_changes": self.subscription_changes,
            "missing_bodies": self.missing,
            "failures": self.failures,
            "warnings": self.warnings,
        }
