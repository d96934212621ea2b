"""``bundlesync demo``: a real round trip between two demo sites.

Two sites, *alpha* and *bravo*, each with its own home (keys, state) and its own
Maildir store, are set up in a scratch directory. alpha starts with a generated
multi-user store; bravo starts empty. They exchange key cards, then:

1. alpha exports, bravo imports: bravo's store now holds alpha's mail;
2. both sites change things concurrently (alpha reads and flags mail, bravo
   files a message into a new folder and deletes one, a new message arrives at
   each), and bundles go both ways until nothing is pending;
3. the demo compares the two stores message by message and shows ``status``.

Everything goes through the same library calls as the CLI commands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from bundlesync.core.model import FLAGGED, SEEN
from bundlesync.operations.export import export_drop
from bundlesync.operations.importer import import_drop
from bundlesync.operations.setup import add_peer, init_site, own_card
from bundlesync.operations.site import open_site, site_lock
from bundlesync.operations.status import site_status
from bundlesync.stores.base import FolderPath, Store
from bundlesync.stores.maildir import MaildirStore

USERS = ("alice@example.org", "bob@example.org")
FOLDERS: tuple[FolderPath, ...] = (("INBOX",), ("Sent",), ("Archive",), ("Archive", "2024"),
                                    ("Entwürfe",))
START = 1_700_000_000


def demo_message(user: str, number: int) -> tuple[bytes, int]:
    """A small, deterministic, MIME-correct message."""
    when = START + number * 3_607
    msg = EmailMessage()
    msg["From"] = f"Sender {number % 7} <sender{number % 7}@example.net>"
    msg["To"] = user
    msg["Subject"] = f"Report {number}: Übersicht für Woche {number % 52}"
    msg["Date"] = format_datetime(datetime.fromtimestamp(when, UTC))
    tag = hashlib.sha256(user.encode()).hexdigest()[:8]
    msg["Message-ID"] = f"<demo-{number}-{tag}@example.net>"
    greeting = f"Hello {user.split('@', maxsplit=1)[0]},\n\n"
    msg.set_content(greeting + "Status line. " * (20 + number % 40))
    if number % 5 == 0:
        msg.add_attachment(bytes(range(256)) * (4 + number % 8), maintype="application",
                           subtype="octet-stream", filename=f"data-{number}.bin")
        # The email package draws a boundary from the global random: the same message
        # would differ between runs (and so its hash, and any choice made by hash).
        # "=_" occurs in neither the quoted-printable text nor the base64 attachment.
        msg.set_boundary(f"=_demo-{number}-{tag}")
    return msg.as_bytes(), when


def populate(store: Store, *, per_folder: int) -> int:
    count = 0
    for user in USERS:
        store.ensure_user(user)
        for f, folder in enumerate(FOLDERS):
            if folder != ("INBOX",):
                store.create_folder(user, folder, guid=None, uidvalidity=None)
            for i in range(per_folder):
                number = f * 1000 + i
                data, when = demo_message(user, number)
                flags = frozenset({SEEN} if i % 3 else set()) | (
                    frozenset({FLAGGED, "$Important"}) if i % 7 == 0 else frozenset())
                store.add_message(user, folder, key=f"{when}.M{i}P{f}.demo", data=data,
                                  flags=flags, internal_date=when)
                count += 1
    return count


def store_digest(store: Store) -> dict[tuple[str, FolderPath], list[tuple[str, frozenset[str]]]]:
    """What a person would compare: per user and folder, message ids and flags."""
    out: dict[tuple[str, FolderPath], list[tuple[str, frozenset[str]]]] = {}
    for user in store.users():
        for folder in store.folders(user):
            out[(user, folder.path)] = sorted(
                (m.guid, m.flags) for m in store.messages(user, folder.path))
    return out


@dataclass
class DemoResult:
    converged: bool
    messages: int
    lines: list[str]


def run_demo(root: Path, *, per_folder: int, now_ms: Callable[[], int],
             say: Callable[[str], None]) -> DemoResult:
    homes = {name: root / name / "home" for name in ("alpha", "bravo")}
    stores = {name: root / name / "mail" / "%d" / "%n" / "Maildir" for name in homes}
    drop = root / "usb-stick"
    drop.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(text)
        say(text)

    alpha_store = MaildirStore(str(stores["alpha"]))
    count = populate(alpha_store, per_folder=per_folder)
    (root / "bravo" / "mail").mkdir(parents=True, exist_ok=True)
    log(f"Generated alpha's store: {len(USERS)} users, {count} messages in {root / 'alpha'}")
    for name, home in homes.items():
        with site_lock(home):
            result = init_site(home, name=name, store_location=str(stores[name]),
                               now_ms=now_ms())
        log(f"init {name}: fingerprint {result.fingerprint}, inventory of "
            f"{result.scan.added} message(s)")
    cards = {}
    for name, home in homes.items():
        cards[name] = root / f"{name}.card"
        own_card(home).write(cards[name])
    add_peer(homes["alpha"], cards["bravo"], name="bravo")
    add_peer(homes["bravo"], cards["alpha"], name="alpha")
    log("Exchanged key cards (a real site compares the fingerprints out of band)")

    def export(name: str) -> None:
        with site_lock(homes[name]):
            site = open_site(homes[name])
            try:
                result = export_drop(site, drop, now_ms=now_ms())
            finally:
                site.index.close()
        for b in result.bundles:
            log(f"{name} export: bundle for {b.peer}, {b.changes} change(s), {b.bodies} "
                f"bod{'y' if b.bodies == 1 else 'ies'}, {b.size:,} bytes (signed, encrypted)")
        for peer in result.up_to_date:
            log(f"{name} export: nothing new for {peer}")

    def import_(name: str) -> None:
        with site_lock(homes[name]):
            site = open_site(homes[name])
            try:
                result = import_drop(site, drop, now_ms=now_ms())
            finally:
                site.index.close()
        for b in result.bundles:
            if b.status == "applied":
                log(f"{name} import: bundle {b.seq} from {b.origin} verified and applied")
        log(f"{name} import: {result.report.summary()}")

    log("-- first transfer: alpha -> bravo")
    export("alpha")
    import_("bravo")

    log("-- concurrent changes at both sites")
    bravo_store = MaildirStore(str(stores["bravo"]))
    user = USERS[0]
    inbox = alpha_store.messages(user, ("INBOX",))
    alpha_store.set_flags(user, ("INBOX",), inbox[0].key, inbox[0].flags | {SEEN, "$Todo"})
    data, when = demo_message(user, 9_999)
    alpha_store.add_message(user, ("INBOX",), key=f"{when}.M1P1.alpha", data=data,
                            flags=frozenset(), internal_date=when)
    log(f"alpha: flagged a message $Todo and received a new one for {user}")
    b_inbox = bravo_store.messages(user, ("INBOX",))
    bravo_store.create_folder(user, ("Projects",), guid=None, uidvalidity=None)
    moved = b_inbox[-1]
    bravo_store.add_message(user, ("Projects",), key=moved.key,
                            data=bravo_store.read_body(user, ("INBOX",), moved.key),
                            flags=moved.flags, internal_date=moved.internal_date)
    bravo_store.expunge(user, ("INBOX",), moved.key)
    bravo_store.expunge(user, ("INBOX",), b_inbox[1].key)
    data, when = demo_message(user, 8_888)
    bravo_store.add_message(user, ("INBOX",), key=f"{when}.M2P2.bravo", data=data,
                            flags=frozenset(), internal_date=when)
    log("bravo: filed a message into a new folder Projects, deleted one, received a new one")

    log("-- bundles both ways")
    export("bravo")
    import_("alpha")
    export("alpha")
    import_("bravo")
    export("bravo")  # carries bravo's acknowledgement back, so nothing stays pending
    import_("alpha")

    a, b = store_digest(alpha_store), store_digest(bravo_store)
    converged = a == b
    total = sum(len(v) for v in a.values())
    log(f"-- result: the two stores are {'IDENTICAL' if converged else 'DIFFERENT'} "
        f"({total} messages in {len(a)} folders)")
    for name, home in homes.items():
        with site_lock(home):
            site = open_site(home)
            try:
                status = site_status(site, now_ms=now_ms())
            finally:
                site.index.close()
        pending = ", ".join(f"{p.name}: {p.pending_changes}" for p in status.peers)
        log(f"status {name}: pending changes per peer -> {pending}")
    return DemoResult(converged=converged, messages=total, lines=lines)
