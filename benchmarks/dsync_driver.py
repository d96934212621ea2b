"""``doveadm backup`` (dsync) between two local Maildir trees, without a daemon.

One ``doveadm`` process per user, as a script over a user list would do:

    USER=<login@domain> HOME=<home> doveadm -c <conf> \\
        -o mail_location=maildir:<src>:INDEX=<idx>:CONTROL=<idx> \\
        backup -s "<state>" maildir:<dst>

* No auth daemon: no ``-u``; ``USER``/``HOME`` name the user, and the paths
  are built per user (``%u`` is not expanded daemon-less).
* ``mail_uid = vmail``: doveadm started as root drops to vmail, so the trees
  are owned by vmail.
* ``maildir_copy_with_hardlinks = no``: on one file system dsync would
  otherwise hard-link instead of copying (and still fsync), which is not the
  transfer being compared. Default fsync stays on.
* The source's INDEX and CONTROL live outside its Maildir, so dsync writes
  nothing into the source tree that rsync and bundlesync read. Two
  consequences are handled here, as Dovecot itself would see them on a live
  server: each folder's ``dovecot-keywords`` is copied into its CONTROL
  directory (else keyword letters read as ``unknown-N``), and a folder rename
  done by the mutator is applied to the CONTROL/INDEX directories too (a
  rename through Dovecot moves both; without it dsync re-sends the folder).
* ``-s state``: the first run gets ``-s ''`` and prints the state; later runs
  pass it back (stateful incremental). Exit 2 means "run again".
* The wire variant replaces the destination by a command, as with
  ``ssh host doveadm dsync-server``, and counts the bytes both ways with a
  small relay in each direction of the pipe.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.maildir import KEYWORDS_FILE, folder_dirnames, iter_maildirs
from benchmarks.measure import ChildResult, CommandFailedError, Sample, run_child
from benchmarks.mutate import FolderRename
from benchmarks.progress import Progress

RERUN_EXIT = 2  # "done, but not perfectly synced: run again"
MAX_RERUNS = 3

# Copies stdin to stdout and writes the byte count to argv[1] when the stream
# ends, or when doveadm tears the pipe down first (SIGTERM, SIGHUP, EPIPE).
_RELAY = """import os, signal, sys
n = 0
def finish(*_):
    with open(sys.argv[1], "w") as f:
        f.write(str(n))
    os._exit(0)
signal.signal(signal.SIGTERM, finish)
signal.signal(signal.SIGHUP, finish)
try:
    while True:
        b = os.read(0, 1 << 20)
        if not b:
            break
        n += len(b)
        v = memoryview(b)
        while v:
            v = v[os.write(1, v):]
except OSError:
    pass
finish()
"""
COUNT_WAIT = 10.0  # seconds to wait for the relays to write their counts


CONFIG = """\
base_dir = {work}/run
state_dir = {work}/state
log_path = /dev/stderr
info_log_path = /dev/stderr
protocols =
ssl = no
mail_uid = vmail
mail_gid = vmail
maildir_copy_with_hardlinks = no
"""


def dsync_available() -> str | None:
    """None if dsync can run here, else why not."""
    if shutil.which("doveadm") is None:
        return "doveadm is not installed (Debian: dovecot-core)"
    if os.geteuid() != 0:
        return "doveadm backup needs root (it drops to the vmail user)"
    try:
        pwd.getpwnam("vmail")
    except KeyError:
        return "there is no 'vmail' user (useradd --system vmail)"
    return None


def closed_parent(work: Path) -> Path | None:
    """The first directory above ``work`` that vmail cannot enter, if any.

    doveadm runs as vmail: behind such a directory it would find no mail and
    leave an empty copy.
    """
    vmail_uid = pwd.getpwnam("vmail").pw_uid
    for parent in work.resolve().parents:
        st = parent.stat()
        if st.st_uid != vmail_uid and not st.st_mode & stat.S_IXOTH:
            return parent
    return None


def vmail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("vmail")
    return entry.pw_uid, entry.pw_gid


def _makedirs_owned(path: Path, owner: tuple[int, int]) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700)
        os.chown(d, *owner)


def _read_count(path: Path) -> int:
    # doveadm can return before the relays have seen the end of their stream.
    deadline = time.monotonic() + COUNT_WAIT
    while True:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if text:
            path.unlink()
            return int(text)
        if time.monotonic() > deadline:
            raise OSError(f"the byte counter {path} was not written")
        time.sleep(0.01)


@dataclass
class _User:
    domain: str
    login: str
    src: Path


class Dsync:
    """A dsync destination tree kept in step with one source tree."""

    def __init__(self, *, work: Path, src_root: Path, name: str, wire: bool = False) -> None:
        self.work = work
        self.src_root = src_root
        self.name = name
        self.wire = wire
        self.owner = vmail_ids()
        self.conf_dir = work / "dovecot"
        self.conf = self.conf_dir / "dovecot.conf"
        # The source's INDEX/CONTROL directories are shared by every destination:
        # they describe the source, not the pair.
        self.src_index = work / "dovecot" / "src-index"
        self.dst_root = work / name
        self.home = work / "dovecot" / "home"
        self.wire_dir = work / "dovecot" / f"wire-{name}"
        self.log_dir = work / "logs" / name
        self.states: dict[str, str] = {}
        self.reruns = 0
        self.failed: str | None = None

    # ------------------------------------------------------------ set-up
    def write_config(self) -> None:
        if not self.conf.exists():
            _makedirs_owned(self.conf_dir, (0, 0))
            os.chmod(self.conf_dir, 0o755)
            self.conf.write_text(CONFIG.format(work=self.conf_dir))
        _makedirs_owned(self.home, self.owner)
        _makedirs_owned(self.src_index, self.owner)
        _makedirs_owned(self.wire_dir, self.owner)
        os.chmod(self.wire_dir, 0o777)  # the relays may run as root or as vmail

    def users(self) -> list[_User]:
        return [_User(u.domain, u.user, u.path) for u in iter_maildirs(self.src_root)]

    def _index_dir(self, user: _User) -> Path:
        return self.src_index / user.domain / user.login

    def reset(self, *, wipe_source_index: bool) -> None:
        """An empty destination (and, for a true first run, no source index)."""
        shutil.rmtree(self.dst_root, ignore_errors=True)
        if wipe_source_index:
            shutil.rmtree(self.src_index, ignore_errors=True)
        self.write_config()
        _makedirs_owned(self.dst_root, self.owner)
        self.states = {}
        self.reruns = 0

    def prepare_keywords(self) -> None:
        """Give each source folder's CONTROL dir its ``dovecot-keywords`` (once)."""
        for user in self.users():
            for folder in folder_dirnames(user.src):
                control = self._index_dir(user) / (folder or ".INBOX")
                target = control / KEYWORDS_FILE
                source = user.src / folder / KEYWORDS_FILE
                if source.exists() and not target.exists():
                    _makedirs_owned(control, self.owner)
                    shutil.copyfile(source, target)
                    os.chown(target, *self.owner)

    def apply_renames(self, renames: list[FolderRename]) -> None:
        """Move the source's INDEX/CONTROL dirs along with renamed folders."""
        for rename in renames:
            maildir = rename.maildir
            index = self.src_index / maildir.parent.parent.name / maildir.parent.name
            if (index / rename.old).exists():
                os.rename(index / rename.old, index / rename.new)

    # ------------------------------------------------------------ running
    def _location(self, user: _User) -> str:
        idx = self._index_dir(user)
        return f"maildir:{user.src}:INDEX={idx}:CONTROL={idx}"

    def _env(self, user: _User) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "USER": f"{user.login}@{user.domain}", "HOME": str(self.home)}

    def _destination(self, user: _User) -> tuple[list[str], Path | None, Path | None]:
        dst = self.dst_root / user.domain / user.login / "Maildir"
        _makedirs_owned(dst.parent, self.owner)
        if not self.wire:
            return [f"maildir:{dst}"], None, None
        count_in = self.wire_dir / f"{user.domain}_{user.login}.in"
        count_out = self.wire_dir / f"{user.domain}_{user.login}.out"
        relay = [sys.executable, "-c", _RELAY]
        server = ["doveadm", "-c", str(self.conf), "-o", f"mail_location=maildir:{dst}",
                  "dsync-server"]
        script = " | ".join([
            shlex.join([*relay, str(count_in)]),
            shlex.join(server),
            shlex.join([*relay, str(count_out)]),
        ])
        return ["bash", "-c", script], count_in, count_out

    def _backup_user(self, user: _User, step: str) -> tuple[ChildResult, int]:
        dest, count_in, count_out = self._destination(user)
        state = self.states.get(f"{user.domain}/{user.login}", "")
        for attempt in range(MAX_RERUNS + 1):
            cmd = ["doveadm", "-c", str(self.conf), "-o", f"mail_location={self._location(user)}",
                   "backup", "-s", state, *dest]
            result = run_child(cmd, env=self._env(user), log_dir=self.log_dir,
                               name=f"{step}-{user.domain}-{user.login}", check=False)
            if result.returncode == RERUN_EXIT and attempt < MAX_RERUNS:
                self.reruns += 1
                continue
            if result.returncode not in (0, RERUN_EXIT):
                raise CommandFailedError(cmd, result)
            break
        lines = result.stdout.strip().splitlines()
        if lines:
            self.states[f"{user.domain}/{user.login}"] = lines[-1].strip()
        wire_bytes = 0
        for path in (count_in, count_out):
            if path is not None:
                wire_bytes += _read_count(path)
        return result, wire_bytes

    def backup_all(self, step: str, progress: Progress | None = None) -> Sample:
        """One ``doveadm backup`` per user, in sequence; the whole loop is timed."""
        users = self.users()
        max_rss = 0
        cpu = 0.0
        wire = 0
        started = time.monotonic()
        for i, user in enumerate(users, 1):
            result, wire_bytes = self._backup_user(user, step)
            max_rss = max(max_rss, result.max_rss_kb)
            cpu += result.cpu_seconds
            wire += wire_bytes
            if progress is not None:
                progress.update(i)
        seconds = time.monotonic() - started
        sample = Sample(seconds, max_rss, cpu)
        if self.wire:
            sample.bytes = wire
        sample.extra = {"users": len(users), "reruns": self.reruns}
        return sample
