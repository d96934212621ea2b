"""Write a deterministic, realistic multi-user Maildir++ store.

    python -m benchmarks.generate OUT --users 10 --folders 5 --messages 200 --seed 1 \\
        [--owner vmail]

Layout ``OUT/<domain>/<user>/Maildir`` (Dovecot template ``OUT/%d/%n/Maildir``),
every folder holding exactly ``--messages`` messages. Folders are taken in a
fixed order so that small stores already hold the awkward cases: INBOX,
``.Sent``, ``.Archive``, ``.Archive.2024`` (a child), ``.Entw&APw-rfe``
(non-ASCII name in modified UTF-7), ``.Trash``, ``.Lists``, ``.Junk``,
``.Projekte``, ``.Projekte.Z&APw-rich``, ``.Family &- Friends``, ...

Per folder: ``cur/ new/ tmp/``, ``maildirfolder`` (not in INBOX), a
``dovecot-keywords`` whose order differs between folders, message files named
``<secs>.M<usecs>P<pid>.<host>,S=<size>,W=<vsize>:2,<flags>`` in ``cur/``
(recent unseen INBOX mail in ``new/`` without flags), mtime = internal date.
Mailing-list posts are byte-identical in every subscriber's folder (each
delivery has its own file name, as a real LDA writes them).

Everything random comes from ``random.Random`` seeded with ``--seed`` and the
user's address, so a given user's mail does not depend on how many other users
there are. Files are not fsynced: this is test data.
"""

from __future__ import annotations

import argparse
import os
import pwd
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.maildir import (
    FOLDER_MARKER,
    KEYWORD_LETTERS,
    KEYWORDS_FILE,
    folder_dirname,
    keywords_text,
    message_filename,
    sort_letters,
)
from benchmarks.mailgen import (
    MAILING_LISTS,
    Person,
    compose_list_message,
    compose_message,
    vsize,
)
from benchmarks.progress import Progress, human_bytes

DAY = 86400
# "Now" of the generated world: fixed, so that the output does not depend on the clock.
EPOCH_NOW = 1748736000  # 2025-06-01T00:00:00Z
YEAR_2024 = (1704067200, 1735689600)
OLD_YEARS = (1546300800, 1704067200)  # 2019 .. 2023

# (folder name, role). Children come after their parent.
FOLDER_PLAN: tuple[tuple[str, str], ...] = (
    ("INBOX", "inbox"),
    ("Sent", "sent"),
    ("Archive", "archive"),
    ("Archive.2024", "archive2024"),
    ("Entwürfe", "drafts"),
    ("Trash", "trash"),
    ("Lists", "lists"),
    ("Junk", "junk"),
    ("Projekte", "archive"),
    ("Projekte.Zürich", "archive"),
    ("Family & Friends", "archive"),
    ("Lists.Dovecot", "lists"),
)

USER_NAMES = (
    "anna", "bjoern", "chloe", "dmitri", "elif", "francois", "greta", "hiroshi", "ingrid",
    "juergen", "kasia", "lars", "maria", "noah", "oskar", "paula", "quentin", "rosa", "soeren",
    "tomas", "ulla", "vera", "wojciech", "xenia", "yusuf", "zoe",
)
DOMAINS = ("example.org", "polar.example.aq", "ship.example.int")
HOSTS = ("mail1", "mail2.example.org", "imap")
KEYWORD_POOL = ("$Forwarded", "$MDNSent", "Work", "$label1", "NonJunk", "Wichtig", "$Important",
                "Follow-up")

# Share of mailing-list copies per role; every list post lands in ~COPIES users.
LIST_SHARE = {"inbox": 0.2, "lists": 0.95, "trash": 0.1}
LIST_COPIES = 4
NEW_SHARE = 0.03
KEYWORD_SHARE = 0.08


def folder_plan(count: int) -> list[tuple[str, str]]:
    plan = list(FOLDER_PLAN[:count])
    plan.extend((f"Ordner {i}", "archive") for i in range(len(plan) + 1, count + 1))
    return plan


def user_address(index: int) -> tuple[str, str]:
    """(domain, login) of the index-th user, stable whatever the user count."""
    name = USER_NAMES[index % len(USER_NAMES)]
    if index >= len(USER_NAMES):
        name += str(index // len(USER_NAMES))
    return DOMAINS[index % len(DOMAINS)], name


def _date_range(role: str) -> tuple[int, int]:
    return {
        "inbox": (EPOCH_NOW - 365 * DAY, EPOCH_NOW),
        "sent": (EPOCH_NOW - 730 * DAY, EPOCH_NOW),
        "archive": OLD_YEARS,
        "archive2024": YEAR_2024,
        "drafts": (EPOCH_NOW - 90 * DAY, EPOCH_NOW),
        "trash": (EPOCH_NOW - 60 * DAY, EPOCH_NOW),
        "lists": (EPOCH_NOW - 365 * DAY, EPOCH_NOW),
        "junk": (EPOCH_NOW - 30 * DAY, EPOCH_NOW),
    }[role]


def system_flags(rng: random.Random, role: str) -> str:
    """System flag letters typical of a folder's role."""
    def p(share: float) -> bool:
        return rng.random() < share

    letters = ""
    if role == "inbox":
        letters = "S" * p(0.88) + "R" * p(0.12) + "F" * p(0.05) + "T" * p(0.005)
    elif role == "sent":
        letters = "S"
    elif role in ("archive", "archive2024"):
        letters = "S" * p(0.98) + "R" * p(0.25) + "F" * p(0.04)
    elif role == "drafts":
        letters = "D" + "S" * p(0.8)
    elif role == "trash":
        letters = "S" * p(0.9) + "T" * p(0.1)
    elif role == "lists":
        letters = "S" * p(0.7) + "F" * p(0.02)
    elif role == "junk":
        letters = "S" * p(0.3)
    return letters


def keyword_letters(rng: random.Random, count: int) -> str:
    if count == 0 or rng.random() >= KEYWORD_SHARE:
        return ""
    return "".join(rng.sample(KEYWORD_LETTERS[:count], k=min(count, rng.choice((1, 1, 2)))))


@dataclass
class StoreStats:
    users: int = 0
    folders: int = 0
    messages: int = 0
    bytes: int = 0
    files: int = 0
    list_copies: int = 0
    in_new: int = 0
    large_messages: int = 0  # over 100 KB
    seconds: float = 0.0
    sizes: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("sizes")
        return data


class _Writer:
    """Creates files and directories the way Dovecot does: 0700 / 0600, optional owner."""

    def __init__(self, owner: tuple[int, int] | None, stats: StoreStats) -> None:
        self.owner = owner
        self.stats = stats

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)
        if self.owner:
            os.chown(path, *self.owner)

    def write(self, path: Path, data: bytes, mtime: int | None = None) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.owner:
                os.fchown(fd, *self.owner)
        finally:
            os.close(fd)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        self.stats.files += 1


class ListPool:
    """Mailing-list posts shared between users: post k is the same bytes for everyone."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed = seed
        self.size = max(1, size)
        self._cache: dict[int, tuple[int, bytes]] = {}

    def post(self, k: int) -> tuple[int, bytes]:
        if k not in self._cache:
            rng = random.Random(f"bundlesync-bench:{self.seed}:list:{k}")
            when = EPOCH_NOW - rng.randrange(365 * DAY)
            mlist = MAILING_LISTS[k % len(MAILING_LISTS)]
            self._cache[k] = (when, compose_list_message(rng, when=when, mlist=mlist))
        return self._cache[k]


def _expected_list_slots(plan: list[tuple[str, str]], messages: int) -> float:
    return sum(LIST_SHARE.get(role, 0.0) * messages for _, role in plan)


def unique_base(rng: random.Random, when: int, used: set[str], data: bytes) -> str:
    """A delivery file name not used yet by this user (flags added by the caller)."""
    while True:
        name = message_filename(secs=when, usecs=rng.randrange(1_000_000),
                                pid=rng.randrange(1000, 65000), host=rng.choice(HOSTS),
                                size=len(data), vsize=vsize(data), flags=None)
        if name not in used:
            used.add(name)
            return name


def generate_user(writer: _Writer, maildir: Path, *, index: int, seed: int, folders: int,
                  messages: int, pool: ListPool, progress: Progress | None = None) -> None:
    domain, login = user_address(index)
    rng = random.Random(f"bundlesync-bench:{seed}:{login}@{domain}")
    owner = Person(login.capitalize(), f"{login}@{domain}")
    stats = writer.stats
    used: set[str] = set()
    taken_posts: set[int] = set()
    writer.mkdir(maildir)
    for name, role in folder_plan(folders):
        folder = maildir / folder_dirname(name) if name != "INBOX" else maildir
        if folder != maildir:
            writer.mkdir(folder)
            writer.write(folder / FOLDER_MARKER, b"")
        for sub in ("cur", "new", "tmp"):
            writer.mkdir(folder / sub)
        keywords = rng.sample(KEYWORD_POOL, k=rng.randint(2, 5))
        writer.write(folder / KEYWORDS_FILE, keywords_text(keywords).encode())
        stats.folders += 1
        low, high = _date_range(role)
        for _ in range(messages):
            data: bytes | None = None
            if rng.random() < LIST_SHARE.get(role, 0.0):
                # Any post this user has not got yet; give up after a few tries.
                for _try in range(8):
                    k = rng.randrange(pool.size)
                    if k not in taken_posts:
                        taken_posts.add(k)
                        when, data = pool.post(k)
                        stats.list_copies += 1
                        break
            in_new = role == "inbox" and data is None and rng.random() < NEW_SHARE
            if data is None:
                when = EPOCH_NOW - rng.randrange(3 * DAY) if in_new else rng.randrange(low, high)
                data = compose_message(rng, when=when, owner=owner, role=role)
            base = unique_base(rng, when, used, data)
            if in_new:
                path = folder / "new" / base
                stats.in_new += 1
            else:
                letters = sort_letters(system_flags(rng, role) + keyword_letters(
                    rng, len(keywords)))
                path = folder / "cur" / f"{base}:2,{letters}"
            writer.write(path, data, mtime=when)
            stats.messages += 1
            stats.bytes += len(data)
            stats.large_messages += len(data) > 100_000
            stats.sizes.append(len(data))
            if progress:
                progress.update(stats.messages, stats.bytes)


def resolve_owner(owner: str | None) -> tuple[int, int] | None:
    if owner is None:
        return None
    entry = pwd.getpwnam(owner)
    return entry.pw_uid, entry.pw_gid


def generate_store(root: Path, *, users: int, folders: int, messages: int, seed: int,
                   owner: str | None = None, quiet: bool = False) -> StoreStats:
    """Write the store under ``root`` (created; must not exist or be empty)."""
    stats = StoreStats(users=users)
    writer = _Writer(resolve_owner(owner), stats)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    if writer.owner:
        os.chown(root, *writer.owner)
    plan = folder_plan(folders)
    # Each post is delivered to about LIST_COPIES users; at least enough posts
    # that no user runs out of distinct ones.
    per_user = _expected_list_slots(plan, messages)
    pool = ListPool(seed, int(max(per_user * users / LIST_COPIES, per_user * 2, 8)))
    progress = Progress("generate", total=users * folders * messages, unit="msgs", quiet=quiet)
    started = time.monotonic()
    for index in range(users):
        domain, login = user_address(index)
        domain_dir = root / domain
        if not domain_dir.exists():
            writer.mkdir(domain_dir)
        writer.mkdir(domain_dir / login)
        generate_user(writer, domain_dir / login / "Maildir", index=index, seed=seed,
                      folders=folders, messages=messages, pool=pool, progress=progress)
    stats.seconds = time.monotonic() - started
    progress.finish(f"{stats.messages:,} messages, {human_bytes(stats.bytes)}")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="store root to create (must be empty)")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--folders", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200, help="messages per folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--owner", help="chown the tree to this user (e.g. vmail)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    stats = generate_store(args.out, users=args.users, folders=args.folders,
                           messages=args.messages, seed=args.seed, owner=args.owner,
                           quiet=args.quiet)
    print(f"{stats.users} users, {stats.folders} folders, {stats.messages:,} messages, "
          f"{human_bytes(stats.bytes)} ({stats.bytes:,} bytes), {stats.list_copies:,} list "
          f"copies, {stats.large_messages} over 100 KB, in {stats.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
