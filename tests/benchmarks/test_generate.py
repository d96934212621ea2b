"""The benchmark store generator and mutator: deterministic, realistic, Dovecot-readable.

The checks parse file names and messages with their own code (and with
``email.parser``), not with the helpers under test.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from benchmarks.generate import generate_store
from benchmarks.mutate import mutate_store

USERS, FOLDERS, MESSAGES = 4, 7, 12  # 7 folders: INBOX .. Lists (list mail, a child, UTF-7)


def tree_digest(root: Path) -> str:
    """Hash of every path and file content under root, and of messages' mtimes.

    Other files (``dovecot-keywords``, ``maildirfolder``) carry the time they
    were written, as on a real server.
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
            if path.parent.name in ("cur", "new"):
                h.update(str(int(path.stat().st_mtime)).encode())
    return h.hexdigest()


def message_paths(root: Path) -> Iterator[Path]:
    for dirpath, _dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) in ("cur", "new"):
            for name in filenames:
                yield Path(dirpath, name)


def snapshot(root: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(user dir, base name) -> (folder dir, flags, content sha256)."""
    found = {}
    for path in message_paths(root):
        maildir = path.parent.parent
        folder = "" if maildir.name == "Maildir" else maildir.name
        user = maildir if folder == "" else maildir.parent
        base, _, flags = path.name.partition(":2,")
        key = (str(user.relative_to(root)), base)
        assert key not in found, f"base name twice for one user: {key}"
        found[key] = (folder, flags, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen") / "store"
    generate_store(root, users=USERS, folders=FOLDERS, messages=MESSAGES, seed=7, quiet=True)
    return root


def test_same_seed_same_bytes_other_seed_other_bytes(store: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    other = tmp_path / "other"
    generate_store(again, users=USERS, folders=FOLDERS, messages=MESSAGES, seed=7, quiet=True)
    generate_store(other, users=USERS, folders=FOLDERS, messages=MESSAGES, seed=8, quiet=True)
    assert tree_digest(again) == tree_digest(store)
    assert tree_digest(other) != tree_digest(store)


def test_layout_is_maildirplusplus_as_dovecot_writes_it(store: Path) -> None:
    maildirs = sorted(store.glob("*/*/Maildir"))
    assert len(maildirs) == USERS
    assert len({m.parent.parent.name for m in maildirs}) > 1  # several domains
    for maildir in maildirs:
        folders = sorted(p.name for p in maildir.iterdir() if p.name.startswith("."))
        assert folders == sorted([".Sent", ".Archive", ".Archive.2024", ".Entw&APw-rfe",
                                  ".Trash", ".Lists"])
        assert not (maildir / "maildirfolder").exists()
        for folder in [maildir, *(maildir / f for f in folders)]:
            assert {"cur", "new", "tmp"} <= {p.name for p in folder.iterdir()}
            assert (folder / "maildirfolder").exists() == (folder != maildir)
            keywords = (folder / "dovecot-keywords").read_text().splitlines()
            assert [line.split(" ", 1)[0] for line in keywords] == [
                str(i) for i in range(len(keywords))]
            count = len(os.listdir(folder / "cur")) + len(os.listdir(folder / "new"))
            assert count == MESSAGES
            for name in os.listdir(folder / "cur"):
                letters = name.partition(":2,")[2]
                assert ":2," in name
                assert letters == "".join(sorted(letters, key=lambda c: (c.islower(), c)))
                for c in letters:
                    assert c in "DFRST" or ord(c) - ord("a") < len(keywords)
            for name in os.listdir(folder / "new"):
                assert ":2," not in name


def test_file_names_sizes_and_mtimes_match_the_content(store: Path) -> None:
    for path in message_paths(store):
        data = path.read_bytes()
        base = path.name.partition(":2,")[0]
        secs, _, rest = base.partition(".")
        fields = dict(part.split("=") for part in rest.split(",")[1:])
        assert int(fields["S"]) == len(data)
        assert int(fields["W"]) == len(data.replace(b"\n", b"\r\n"))
        assert int(path.stat().st_mtime) == int(secs)
        assert b"\r\n" not in data[:2000]


def test_messages_are_real_mime(store: Path) -> None:
    kinds: Counter[str] = Counter()
    encodings: Counter[str] = Counter()
    non_ascii_subjects = 0
    for path in message_paths(store):
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        for header in ("Message-ID", "Date", "From", "Subject"):
            assert msg[header], (path, header)
        if not str(msg["Subject"]).isascii():
            non_ascii_subjects += 1
        kinds[msg.get_content_type()] += 1
        for part in msg.walk():
            assert not part.defects, (path, part.defects)
            if not part.is_multipart():
                encodings[str(part.get("Content-Transfer-Encoding", "7bit"))] += 1
                content = part.get_content()
                assert len(content) > 0
    assert {"text/plain", "multipart/alternative", "multipart/mixed"} <= set(kinds)
    assert {"7bit", "quoted-printable", "base64"} <= set(encodings)
    assert non_ascii_subjects > 0


def test_mailing_list_posts_are_byte_identical_across_users(store: Path) -> None:
    owners: dict[str, set[str]] = {}
    for path in message_paths(store):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        user = next(p for p in path.parents if p.name == "Maildir").parent
        owners.setdefault(digest, set()).add(str(user))
    shared = [users for users in owners.values() if len(users) > 1]
    assert shared, "no message is shared between users"


def test_sizes_are_mostly_small_with_a_tail(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    stats = generate_store(root, users=2, folders=5, messages=100, seed=3, quiet=True)
    sizes = sorted(p.stat().st_size for p in message_paths(root))
    assert len(sizes) == stats.messages == 1000
    median = sizes[len(sizes) // 2]
    assert 2_000 <= median <= 20_000
    assert sizes[-1] > 100_000
    assert sum(s > 100_000 for s in sizes) < len(sizes) * 0.1


def test_mutator_changes_about_the_asked_fraction(store: Path, tmp_path: Path) -> None:
    work = tmp_path / "m"
    shutil.copytree(store, work)
    before = snapshot(work)
    mutate_store(work, frac=0.1, seed=5, renames=0)
    after = snapshot(work)
    flags = sum(1 for k in before.keys() & after.keys()
                if before[k][0] == after[k][0] and before[k][1] != after[k][1])
    moves = sum(1 for k in before.keys() & after.keys() if before[k][0] != after[k][0])
    expunged = len(before.keys() - after.keys())
    new = len(after.keys() - before.keys())
    asked = round(0.1 * len(before))
    assert abs(flags + moves + expunged + new - asked) <= 2
    assert flags > expunged > 0
    assert new > moves > 0
    for k in before.keys() & after.keys():
        assert before[k][2] == after[k][2], "content changed by a flag change or move"
    for path in work.glob("*/*/Maildir/**/tmp/*"):
        raise AssertionError(f"left in tmp/: {path}")


def test_mutator_is_deterministic_and_renames_children_with_parent(
        store: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(store, a)
    shutil.copytree(store, b)
    report = mutate_store(a, frac=0.05, seed=9, renames=1)
    mutate_store(b, frac=0.05, seed=9, renames=1)
    assert tree_digest(a) == tree_digest(b)
    assert report.renames
    maildir = report.renames[0].maildir
    old_dirs = {p.name for p in (store / maildir.relative_to(a)).iterdir()
                if p.name.startswith(".")}
    new_dirs = {p.name for p in maildir.iterdir() if p.name.startswith(".")}
    gone, came = old_dirs - new_dirs, new_dirs - old_dirs
    assert len(gone) == len(came) >= 1
    parent = min(gone, key=len)
    new_parent = min(came, key=len)
    assert {d[len(parent):] for d in gone} == {d[len(new_parent):] for d in came}


def _vmail() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("vmail")
    except KeyError:
        return None


@pytest.mark.dovecot
@pytest.mark.skipif(shutil.which("doveadm") is None or os.geteuid() != 0 or _vmail() is None,
                    reason="needs doveadm, root and the vmail user")
def test_dovecot_reads_the_generated_store() -> None:
    vmail = _vmail()
    assert vmail is not None
    # Not tmp_path: vmail must be able to traverse the directory.
    work = Path(tempfile.mkdtemp(prefix="bench-dovecot-"))
    try:
        os.chmod(work, 0o755)
        root = work / "store"
        generate_store(root, users=2, folders=FOLDERS, messages=6, seed=11, owner="vmail",
                       quiet=True)
        conf = work / "dovecot.conf"
        conf.write_text(
            f"base_dir = {work}/run\nstate_dir = {work}/state\nlog_path = /dev/stderr\n"
            "protocols =\nssl = no\nmail_uid = vmail\nmail_gid = vmail\n")
        for maildir in sorted(root.glob("*/*/Maildir")):
            env = {"PATH": os.environ["PATH"], "USER": maildir.parent.name, "HOME": str(work)}
            base = ["doveadm", "-c", str(conf), "-o", f"mail_location=maildir:{maildir}"]
            listed = subprocess.run([*base, "mailbox", "list"], env=env, check=True,
                                    capture_output=True, text=True).stdout.split("\n")
            assert {"INBOX", "Sent", "Archive", "Archive.2024", "Entwürfe", "Trash",
                    "Lists"} == {line for line in listed if line}
            fetched = subprocess.run([*base, "-f", "tab", "fetch", "mailbox guid flags", "all"],
                                     env=env, check=True, capture_output=True,
                                     text=True).stdout.splitlines()[1:]
            seen = {}
            for line in fetched:
                mailbox, guid, flags = line.split("\t")
                seen[(mailbox, guid)] = set(flags.split()) - {"\\Recent"}
            expected = {}
            letters_to_flag = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered",
                               "S": "\\Seen", "T": "\\Deleted"}
            for path in message_paths(maildir):
                folder_dir = path.parent.parent
                mailbox = "INBOX" if folder_dir == maildir else {
                    ".Entw&APw-rfe": "Entwürfe"}.get(folder_dir.name, folder_dir.name[1:])
                names = (folder_dir / "dovecot-keywords").read_text().splitlines()
                base, _, letters = path.name.partition(":2,")
                expected[(mailbox, base)] = {
                    letters_to_flag[c] if c.isupper() else names[ord(c) - ord("a")].split(" ")[1]
                    for c in letters}
            assert seen == expected
    finally:
        shutil.rmtree(work)
