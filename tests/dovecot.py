"""Real Dovecot as a test oracle: doveadm without a daemon, and an IMAP server on loopback.

Use in a test module::

    from tests.dovecot import Dovecot

    pytestmark = pytest.mark.dovecot

    @pytest.fixture
    def dovecot() -> Iterator[Dovecot]:
        with Dovecot.session() as session:   # skips without Dovecot or root
            yield session

    def test_something(dovecot: Dovecot) -> None:
        maildir = dovecot.path("alice", "Maildir")    # parent owned by vmail
        ...                                           # write it with bundlesync
        assert dovecot.dump(maildir) == [("INBOX", "<guid>", frozenset({"\\\\Seen"}))]
        with dovecot.imap_server({"alice": maildir}) as (host, port):
            client = imaplib.IMAP4(host, port)
            client.login("alice", Dovecot.PASSWORD)

Mailbox names are IMAP names in UTF-8 with "." between levels (Maildir++'s
separator), e.g. ``"Archive.Zürich"``; ``mailbox_name(("Archive", "Zürich"))``
builds one from a folder path.

Without ``doveadm`` or without root everything here skips the test. The work
directory is made with ``tempfile.mkdtemp`` (not pytest's ``tmp_path``, which
vmail cannot traverse), owned by vmail, mode 0755, and removed afterwards. Every
server is stopped in ``finally`` by its process id.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

MAIL_USER = "vmail"
Dump = list[tuple[str, str, frozenset[str]]]


def mailbox_name(path: Sequence[str]) -> str:
    """The IMAP name of a folder path in the Maildir++ namespace ("." between levels)."""
    return ".".join(path)


def unavailable_reason() -> str | None:
    """Why Dovecot cannot be used as an oracle here, or None if it can."""
    if shutil.which("doveadm") is None or shutil.which("dovecot") is None:
        return "Dovecot (doveadm, dovecot) is not installed"
    if os.geteuid() != 0:
        return (
            "the Dovecot oracle needs root (Dovecot refuses mail access as root and drops "
            "to vmail, which only root can do)"
        )
    try:
        pwd.getpwnam(MAIL_USER)
    except KeyError:
        return f"the system user {MAIL_USER!r} does not exist"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Dovecot:
    """One oracle work directory with a daemon-less doveadm configuration."""

    PASSWORD = "secret"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        entry = pwd.getpwnam(MAIL_USER)
        self.uid = entry.pw_uid
        self.gid = grp.getgrgid(entry.pw_gid).gr_gid
        self.home = self.directory("home")
        self.conf = workdir / "doveadm.conf"
        self.conf.write_text(
            f"base_dir = {self.path('run')}\n"
            f"state_dir = {self.path('state')}\n"
            "log_path = /dev/stderr\n"
            "info_log_path = /dev/stderr\n"
            "protocols =\n"
            "ssl = no\n"
            f"mail_uid = {MAIL_USER}\n"
            f"mail_gid = {MAIL_USER}\n"
            # Maildir++'s separator, stated so that dsync between formats agrees on it.
            "namespace inbox {\n  inbox = yes\n  prefix =\n  separator = .\n}\n"
        )
        self._servers = 0

    @classmethod
    @contextlib.contextmanager
    def session(cls) -> Iterator[Dovecot]:
        """A fresh oracle; skips the test when Dovecot cannot run here."""
        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        workdir = Path(tempfile.mkdtemp(prefix="bsdc"))
        try:
            entry = pwd.getpwnam(MAIL_USER)
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
            workdir.chmod(0o755)
            yield cls(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    # --- files ---------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        """A path in the work directory whose parents exist and belong to vmail.

        The path itself is not created: a Maildir that bundlesync writes there
        inherits vmail as its owner from the parent.
        """
        current = self.workdir
        for part in parts[:-1]:
            current = current / part
            if not current.exists():
                current.mkdir(mode=0o755)
                os.chown(current, self.uid, self.gid)
        return self.workdir.joinpath(*parts)

    def directory(self, *parts: str) -> Path:
        """Like :meth:`path`, and the directory itself is created too."""
        target = self.path(*parts)
        if not target.exists():
            target.mkdir(mode=0o755)
            os.chown(target, self.uid, self.gid)
        return target

    def chown_tree(self, root: Path) -> None:
        """chown -R vmail: what Dovecot needs to use files written as root."""
        os.chown(root, self.uid, self.gid, follow_symlinks=False)
        for directory, subdirs, files in os.walk(root):
            for name in [*subdirs, *files]:
                os.chown(os.path.join(directory, name), self.uid, self.gid,
                         follow_symlinks=False)

    # --- doveadm -------------------------------------------------------------------------

    def doveadm(
        self,
        maildir: Path,
        *args: str,
        stdin: bytes | None = None,
        options: Sequence[str] = (),
        chown: bool = True,
        location: str | None = None,
    ) -> str:
        """Run ``doveadm`` on one Maildir as the user "oracle"; its stdout, or AssertionError.

        ``location`` replaces ``maildir:<maildir>`` (e.g. ``sdbox:<path>``).
        """
        if chown and maildir.exists():
            self.chown_tree(maildir)
        mail_location = location or f"maildir:{maildir}"
        command = ["doveadm", "-c", str(self.conf), "-o", f"mail_location={mail_location}"]
        for option in options:
            command += ["-o", option]
        done = subprocess.run(
            [*command, *args],
            input=stdin,
            capture_output=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "USER": "oracle",
                 "HOME": str(self.home)},
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"doveadm {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode("utf-8")

    def fetch(
        self,
        maildir: Path,
        fields: str,
        *query: str,
        chown: bool = True,
        location: str | None = None,
    ) -> list[dict[str, str]]:
        """``doveadm -f tab fetch FIELDS QUERY`` (default: all) as one dict per message."""
        text = self.doveadm(maildir, "-f", "tab", "fetch", fields, *(query or ("all",)),
                            chown=chown, location=location)
        lines = text.splitlines()
        if not lines:
            return []
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]

    def dump(self, maildir: Path, *, chown: bool = True) -> Dump:
        """(mailbox, message GUID, flags) of every message, sorted; ``\\Recent`` dropped."""
        rows = self.fetch(maildir, "mailbox guid flags", "all", chown=chown)
        return sorted(
            (row["mailbox"], row["guid"],
             frozenset(flag for flag in row["flags"].split() if flag != "\\Recent"))
            for row in rows
        )

    def mailboxes(self, maildir: Path, *, subscribed: bool = False) -> list[str]:
        """``doveadm mailbox list`` (with ``-s``: the subscribed ones), sorted."""
        args = ["mailbox", "list", *(["-s"] if subscribed else [])]
        return sorted(line for line in self.doveadm(maildir, *args).splitlines() if line)

    def status(self, maildir: Path, mailbox: str) -> dict[str, str]:
        """GUID, UIDVALIDITY and message count of one mailbox."""
        text = self.doveadm(maildir, "-f", "tab", "mailbox", "status",
                            "guid uidvalidity messages", mailbox)
        header, values = text.splitlines()[:2]
        return dict(zip(header.split("\t"), values.split("\t"), strict=True))

    def save(
        self, maildir: Path, mailbox: str, data: bytes, *, location: str | None = None
    ) -> None:
        """Deliver one message as an IMAP APPEND or LDA would."""
        self.doveadm(maildir, "save", "-m", mailbox, stdin=data, location=location)

    def flags_add(self, maildir: Path, mailbox: str, flags: str, *query: str) -> None:
        """``doveadm flags add FLAGS mailbox MAILBOX QUERY`` (flags space-separated)."""
        self.doveadm(maildir, "flags", "add", flags, "mailbox", mailbox, *(query or ("all",)))

    def flags_remove(self, maildir: Path, mailbox: str, flags: str, *query: str) -> None:
        """``doveadm flags remove FLAGS mailbox MAILBOX QUERY``."""
        self.doveadm(maildir, "flags", "remove", flags, "mailbox", mailbox,
                     *(query or ("all",)))

    def expunge(self, maildir: Path, mailbox: str, *query: str) -> None:
        """``doveadm expunge mailbox MAILBOX QUERY``."""
        self.doveadm(maildir, "expunge", "mailbox", mailbox, *query)

    def create_mailbox(self, maildir: Path, *names: str) -> None:
        """``doveadm mailbox create NAME...``."""
        self.doveadm(maildir, "mailbox", "create", *names)

    def rename_mailbox(self, maildir: Path, old: str, new: str) -> None:
        """``doveadm mailbox rename OLD NEW`` (children move along)."""
        self.doveadm(maildir, "mailbox", "rename", old, new)

    def subscribe(self, maildir: Path, *names: str) -> None:
        """``doveadm mailbox subscribe NAME...``."""
        self.doveadm(maildir, "mailbox", "subscribe", *names)

    # --- IMAP ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def imap_server(
        self, users: Mapping[str, Path], *, chown: bool = True, extra_config: str = ""
    ) -> Iterator[tuple[str, int]]:
        """An IMAP server on a free 127.0.0.1 port for ``users`` (name -> Maildir).

        Every user logs in with :attr:`PASSWORD`. Yields ``(host, port)``; the
        master and its children are stopped when the block ends. With
        ``chown=False`` the Maildirs are served as they are (to check ownership).
        ``extra_config`` is appended to the configuration (namespaces, plugins).
        """
        self._servers += 1
        base = self.directory(f"imap{self._servers}")
        port = _free_port()
        passwd = base / "users"
        lines = []
        for user, maildir in users.items():
            if chown and maildir.exists():
                self.chown_tree(maildir)
            lines.append(f"{user}:{{PLAIN}}{self.PASSWORD}::::{self.home}::"
                         f"userdb_mail=maildir:{maildir}\n")
        passwd.write_text("".join(lines))
        passwd.chmod(0o644)
        log = base / "dovecot.log"
        conf = base / "dovecot.conf"
        conf.write_text(
            f"base_dir = {base}/run\n"
            f"state_dir = {base}/state\n"
            f"log_path = {log}\n"
            "protocols = imap\n"
            "listen = 127.0.0.1\n"
            "ssl = no\n"
            "disable_plaintext_auth = no\n"
            "auth_mechanisms = plain login\n"
            f"mail_uid = {MAIL_USER}\n"
            f"mail_gid = {MAIL_USER}\n"
            f"passdb {{\n  driver = passwd-file\n  args = {passwd}\n}}\n"
            f"userdb {{\n  driver = passwd-file\n  args = {passwd}\n}}\n"
            "service imap-login {\n"
            f"  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n"
            "  inet_listener imaps {\n    port = 0\n  }\n"
            "}\n" + extra_config
        )
        master = subprocess.Popen(
            ["dovecot", "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            self._wait_for_port(port, master, log)
            yield ("127.0.0.1", port)
        finally:
            master.terminate()
            try:
                master.wait(timeout=15)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait(timeout=15)
            if master.stderr is not None:
                master.stderr.close()

    @staticmethod
    def _wait_for_port(port: int, master: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if master.poll() is not None:
                errors = master.stderr.read().decode(errors="replace") if master.stderr else ""
                raise AssertionError(f"dovecot exited {master.returncode}: {errors}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", port), timeout=0.5
            ):
                return
            time.sleep(0.05)
        logged = log.read_text(errors="replace") if log.exists() else ""
        raise AssertionError(f"dovecot did not accept connections on port {port}:\n{logged}")
