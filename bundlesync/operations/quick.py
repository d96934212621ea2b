"""The quick path of a no-change ``export`` or ``import``: decided before the
command line library, the model and the state index are imported.

Most runs on a quiet site change nothing: every folder's stamp is as the index
recorded it, every peer has acknowledged everything, and the drop holds nothing
new for this site. The full path finds that out in about 25 ms of work after
about 150 ms of start-up (click, the model's dataclasses, the state index, the
store adapter). This module answers such a run with the standard library, a
read-only glance at the index (``state.glance``) and the key files' parser,
and prints exactly what the full path prints; it writes what the full path
writes in that case (the lock's holder, ``last-scan``, this site's card and
README.txt in a new drop) and nothing else.

It never decides that something changed: every check below either proves that
the full path would find nothing to do, or gives up, and the full path runs
(``bundlesync.__main__``, the command's entry, tries this first). It gives up
on any option it does not know, any error, any unusual file, and:

* the configuration: anything but a store location and empty mailbox filters;
* the mark of what this site spent (``spent.json``) and the index: anything the
  full path would move to a new incarnation or write (``Site.check_spent``,
  ``Site.settle``), pending work, bodies wanted, held-back mailboxes, spooled
  bodies, a stream whose contiguous counter would advance;
* the store, user by user, with the scan's rules: the users the location
  template finds must be those the index knows, each user's folder directories
  those the index records, and each folder's stamp the one recorded and not
  racy (``stores.stamps``, the same rules the scan uses); a ``dovecot-uidlist``
  naming another mailbox GUID, a symlink, a folder the scan would warn about;
* the ``subscriptions`` file: the scan compares it with the merged state, which
  this path does not load; it is taken as unchanged only if it was last changed
  (its ctime, which no tool can set back) before the last scan that took in
  every user and mailbox (``operations.freshness``), with the stamps' racy
  window to spare;
* the drop: any bundle but this site's own bundles as the state recorded them
  (name and size) and, for an export, peers' bundles by their names; a
  revocation, a newer card of a trusted peer, a leftover temporary file of ours;
  a README.txt that does not list the bundles there (unless there are none);
* the peers: a card without its row in the index, a peer that has not
  acknowledged every change or asks for bodies, a last bundle that does not
  carry the current version vector.

``tests/cli/test_quick.py`` runs both paths on the same sites and compares
their output, and shows each kind of change making this path give up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bundlesync.state.glance import StateGlance

# As stores.base.INBOX, operations.config, format.volumes...: a test checks each
# against the module it mirrors.
INBOX = ("INBOX",)
CONFIG_NAME = "bundlesync.toml"
STATE_NAME = "state.sqlite"
MARK_NAME = "spent.json"
SUBSCRIPTIONS = "subscriptions"
UIDLIST = "dovecot-uidlist"
BUNDLE_SUFFIX = ".bsb"  # format.volumes: every bundle volume's name ends so
TEMP_SUFFIX = ".tmp"  # format.volumes: and a temporary file of a write so
_CONFIG_SECTIONS = {"site": {"name", "store"},
                    "filters": {"include", "exclude", "iinclude", "iexclude"},
                    "warnings": {"silent_peer_days"},
                    "limits": {"max_message_size", "max_new_users", "max_new_folders",
                               "max_folder_depth"}}
# The location template's variables, as whole path components (stores.location).
_VARIABLES = {"%u": "u", "%n": "n", "%d": "d", "%{user}": "u", "%{username}": "n",
              "%{domain}": "d"}
JSON_SCHEMA_VERSION = 1  # cli.output.JSON_SCHEMA_VERSION


class GiveUp(Exception):  # not an error: the full path takes over
    """This run is not one the quick path can answer; the full path runs it."""


class Request:
    """A command line the quick path may answer."""

    # Plain classes in this module: a dataclass costs about a millisecond to create
    # at import, and the import is what this module saves.
    __slots__ = ("command", "drop", "home", "json", "quiet")

    def __init__(self, command: str, drop: Path, home: Path | None, as_json: bool,
                 quiet: bool) -> None:
        self.command = command  # "export" or "import"
        self.drop = drop
        self.home = home
        self.json = as_json
        self.quiet = quiet


def parse(args: Sequence[str]) -> Request | None:
    """The request on a command line, or None for anything but ``[--home DIR]
    [--json] [-q] export|import DROP`` in any order (what click would read alike)."""
    home: str | None = None
    as_json = quiet = False
    words: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--home" or word.startswith("--home="):
            if home is not None:
                return None  # given twice: which one counts is click's business
            if word == "--home":
                if index + 1 >= len(args):
                    return None
                index += 1
                home = args[index]
            else:
                home = word.removeprefix("--home=")
            if not home or home.startswith("-"):
                return None
        elif word == "--json":
            as_json = True
        elif word in ("-q", "--quiet"):
            quiet = True
        elif word.startswith("-"):
            return None  # -v, --to, --dry-run, --help, "--", ...: the full path's
        else:
            words.append(word)
        index += 1
    if len(words) != 2 or words[0] not in ("export", "import") or not words[1]:
        return None
    return Request(words[0], Path(words[1]), None if home is None else Path(home),
                   as_json, quiet)


def run(args: Sequence[str], *, why: list[str] | None = None) -> int | None:
    """Answer ``args`` if it is a no-change export or import; None to run the full path
    (then ``why``, if given, gets the reason: for tests and for finding out)."""
    request = parse(args)
    if request is None or _environment_says_no(request):
        if why is not None:
            why.append("not a command line or environment the quick path answers")
        return None
    try:
        home = _home(request)
        with _site_lock(home):
            started = int(time.time() * 1000)  # as the full path's now_ms(), under the lock
            site = _Site.open(home, started_ms=started)
            try:
                if request.command == "export":
                    result = _export(site, request)
                else:
                    result = _import(site, request)
            finally:
                site.index.close()
    except KeyboardInterrupt:
        said = "Interrupted; nothing half-done was kept."  # as the full path says it
        print(said, file=sys.stderr)
        return _finish(request, 130, None, error={
            "code": "interrupted", "message": said, "hint": None, "exit_code": 130})
    except Exception as exc:  # any surprise, GiveUp included: the full path decides
        if why is not None:
            why.append(str(exc) if isinstance(exc, GiveUp) else f"{type(exc).__name__}: {exc}")
        return None
    _say(request, result)
    return _finish(request, 0, result, error=None)


def _environment_says_no(request: Request) -> bool:
    if any(key.startswith("_BUNDLESYNC_COMPLETE") for key in os.environ):
        return True  # shell completion
    if os.environ.get("BUNDLESYNC_CRASH_AT"):
        return True  # a crash test aims at the full path (operations.failpoints)
    # On a terminal the full path draws progress on stderr.
    return not (request.json or request.quiet) and sys.stderr.isatty()


def _home(request: Request) -> Path:
    if request.home is not None:
        home = request.home
    else:
        env = os.environ.get("BUNDLESYNC_HOME")
        if env is None:
            from bundlesync.keys import default_home  # noqa: PLC0415

            home = default_home()
        elif env:
            home = Path(env)
        else:
            raise GiveUp("BUNDLESYNC_HOME is set but empty")
    if not home.is_dir():
        raise GiveUp("no site home there: the full path says so")
    return home


@contextlib.contextmanager
def _site_lock(home: Path) -> Iterator[None]:
    """The site lock as ``operations.site.site_lock`` takes it; held by another run:
    give up (the full path waits or reports it)."""
    fd = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise GiveUp("the site is locked") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


# -- the site, read ------------------------------------------------------------------


class _Peer:
    __slots__ = ("name", "own_name", "site_id")

    def __init__(self, site_id: str, name: str, own_name: str) -> None:
        self.site_id = site_id
        self.name = name  # the local name (the trust store's)
        self.own_name = own_name  # the name its bundles carry


class _Site:
    """What the checks read of the site: its names, peers, store and index."""

    def __init__(self, home: Path, store: str, *, name: str, site_id: str, peers: list[_Peer],
                 index: StateGlance, started_ms: int) -> None:
        self.home = home
        self.store = store
        self.name = name
        self.site_id = site_id
        self.peers = peers
        self.index = index
        self.incarnation = 1
        self.started_ms = started_ms

    @classmethod
    def open(cls, home: Path, *, started_ms: int) -> _Site:
        store = _read_config(home / CONFIG_NAME)
        from bundlesync.errors import LocalError  # noqa: PLC0415
        from bundlesync.keys import TrustStore, peek_identity  # noqa: PLC0415

        try:
            recorded = peek_identity(home / "keys")
            if recorded is None:
                raise GiveUp("the key file records no site id, or is sealed")
            trust = TrustStore(home / "peers")
            cards = trust.list(verify=False)
        except LocalError as exc:
            raise GiveUp(exc.message) from exc
        if (home / "peers" / "revoked").exists():
            raise GiveUp("revocations are placed and taken by the full path")
        name, site_id = recorded
        peers = [_Peer(c.site_id, c.name, c.own_name) for c in cards]
        index = StateGlance(home / STATE_NAME)
        try:
            site = cls(home, store, name=name, site_id=site_id, peers=peers, index=index,
                       started_ms=started_ms)
            site.incarnation = index.meta_int("incarnation") or 1
        except BaseException:
            index.close()
            raise
        return site


def _read_config(path: Path) -> str:
    """The store location, if the configuration is one the quick path can follow."""
    import tomllib  # noqa: PLC0415

    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    for section, value in data.items():
        if section not in _CONFIG_SECTIONS or not isinstance(value, dict) or (
                set(value) - _CONFIG_SECTIONS[section]):
            raise GiveUp(f"configuration section {section!r} is the full path's")
    site = data["site"]
    if not isinstance(site.get("name"), str) or not isinstance(site.get("store"), str):
        raise GiveUp("the full path reports a bad [site]")
    if any(value != [] for value in data.get("filters", {}).values()):
        raise GiveUp("mailbox filters are the full path's")
    for section in ("warnings", "limits"):
        for value in data.get(section, {}).values():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GiveUp(f"the full path checks [{section}]")
    return str(site["store"])


# -- the spent mark and the index ----------------------------------------------------


def _check_state(site: _Site) -> None:
    """Give up unless opening and settling the site would write nothing
    (``Site.check_spent``, ``Site.settle``) and no work is pending."""
    try:
        data = json.loads((site.home / MARK_NAME).read_text(encoding="utf-8"))
        mark_site, mark_inc = str(data["site"]), int(data["incarnation"])
        reserved, committed = int(data["reserved"]), int(data["committed"])
        mark_seqs = {str(k): int(v) for k, v in data.get("seqs", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GiveUp("no mark, or one the full path reports") from exc
    index = site.index
    counter = index.meta_int("counter") or 0
    seqs = index.bundle_seqs(site.incarnation)
    # Exactly the mark settle() would write: not restored, not behind the index.
    if (mark_site, mark_inc) != (site.site_id, site.incarnation) or not (
            counter == committed <= reserved) or seqs != mark_seqs:
        raise GiveUp("the spent mark and the index differ")
    if index.has_pending():
        raise GiveUp("pending work is applied by the full path")
    if index.has_wanted():
        raise GiveUp("wanted bodies are cleared by the full path")
    if index.meta("held_back") != "{}":
        raise GiveUp("the held-back list would be written")
    # advance_streams() of our stream: written when its row is missing or behind.
    contiguous = index.contiguous(site.site_id, site.incarnation)
    if contiguous is None or index.has_change(site.site_id, site.incarnation, contiguous + 1):
        raise GiveUp("our stream's contiguous counter would move")


# -- the store -------------------------------------------------------------------------


def _check_store(site: _Site) -> None:
    """Give up unless a scan of every user would list no folder and find no change."""
    from bundlesync.operations.freshness import last_whole_scan  # noqa: PLC0415

    since_ms = last_whole_scan(site.home)
    if since_ms is None:
        raise GiveUp("no whole scan to measure the subscriptions' age against")
    since_ns = since_ms * 1_000_000
    folders: dict[str, list[tuple[str, tuple[str, ...], bytes | None]]] = {}
    for user, guid, path, marks in site.index.folder_rows():
        folders.setdefault(user, []).append((guid, path, marks))
    location = _Location(site.store)
    if set(location.users()) != set(folders):
        raise GiveUp("users were added to or removed from the store")
    for user, rows in sorted(folders.items()):
        _check_user(location.path_for(user), rows, since_ns=since_ns)


def _check_user(root: str, rows: list[tuple[str, tuple[str, ...], bytes | None]], *,
                since_ns: int) -> None:
    from bundlesync.stores import mutf7, stamps  # noqa: PLC0415

    expected: dict[str, tuple[str, bytes | None]] = {}
    inbox = None
    for guid, path, stored in rows:
        if path == INBOX:
            inbox = (guid, stored)
            continue
        name = "." + ".".join(mutf7.encode(component) for component in path)
        if tuple(mutf7.decode(c) for c in name[1:].split(".")) != path:
            raise GiveUp("a folder name that does not read back")
        expected[name] = (guid, stored)
    if inbox is None:
        raise GiveUp("no INBOX row")
    with os.scandir(root) as entries:
        found = {e.name for e in entries
                 if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir()}
    if found != set(expected):
        raise GiveUp("folders were created, renamed or deleted")
    for directory, (guid, recorded) in [(root, inbox), *(
            (os.path.join(root, name), row) for name, row in sorted(expected.items()))]:
        marks = stamps.unlinked_marks(directory, itself=directory != root)
        if marks is None or stamps.is_racy(marks, time.time_ns()):
            raise GiveUp("a folder vanished or is a symlink, or its stamp is racy")
        if recorded is None or bytes(recorded) != _cbor_marks(marks):
            raise GiveUp("a folder's stamp moved")
        _check_uidlist(os.path.join(directory, UIDLIST), guid)
    _check_subscriptions(root, since_ns)


def _cbor_marks(marks: tuple[int, ...]) -> bytes:
    """The marks as the index stores them (``state.codec.encode_marks``: a CBOR array
    of unsigned integers, each in its shortest form, as cbor2 writes it)."""
    if len(marks) == 2 and all(1 << 32 <= mark < 1 << 64 for mark in marks):
        # The usual case: two mtimes in nanoseconds, eight bytes each.
        return b"\x82\x1b%s\x1b%s" % (marks[0].to_bytes(8, "big"), marks[1].to_bytes(8, "big"))
    out = bytearray([0x80 | len(marks)])
    for mark in marks:
        if mark < 24:
            out.append(mark)
        else:
            size = next(n for n in (1, 2, 4, 8) if mark < 1 << (8 * n))
            out.append(0x18 + (1, 2, 4, 8).index(size))
            out += mark.to_bytes(size, "big")
    return bytes(out)


def _check_uidlist(path: str, guid: str) -> None:
    """Give up unless the scan would pair this folder with its own row: its
    ``dovecot-uidlist`` names no mailbox GUID, or the row's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GiveUp("a dovecot-uidlist that is not a file")
        head = os.read(fd, 1024)
    finally:
        os.close(fd)
    fields = head.split(b"\n", 1)[0].decode("ascii", "replace").split()
    named = {f[1:].lower() for f in fields[1:] if f.startswith("G")}
    if named - {guid}:
        raise GiveUp("the folder's mailbox GUID is not the recorded one")


def _check_subscriptions(root: str, since_ns: int) -> None:
    """Give up unless ``subscriptions`` is as the last whole scan (which began at
    ``since_ns``) read it: last changed before that, with the racy window of the
    stamps to spare (the kernel dates a change with a clock that may lag a tick)."""
    from bundlesync.stores.stamps import racy_window_ns  # noqa: PLC0415

    try:
        changed = os.lstat(os.path.join(root, SUBSCRIPTIONS)).st_ctime_ns
    except FileNotFoundError:
        changed = os.lstat(root).st_ctime_ns  # removed: the directory's entry changed
    if changed >= since_ns - racy_window_ns((changed,)):
        raise GiveUp("the subscriptions may have changed since the last whole scan")


class _Location:
    """The users of a location template, found as ``stores.location`` finds them, or
    more (names it would refuse): the caller compares them with the index's."""

    def __init__(self, template: str) -> None:
        if ":" in template or not template.startswith("/"):
            raise GiveUp("a location the full path reads or refuses")
        self.parts: list[tuple[bool, str]] = []  # (is a variable, literal or name)
        for component in filter(None, template.split("/")):
            if component in _VARIABLES:
                self.parts.append((True, _VARIABLES[component]))
            elif "%" in component:
                raise GiveUp("a location component the quick path does not expand")
            else:
                self.parts.append((False, component))
        names = [value for variable, value in self.parts if variable]
        if len(set(names)) != len(names) or set(names) not in (set(), {"u"}, {"n"},
                                                                {"n", "d"}):
            raise GiveUp("a location the quick path does not expand")
        self.variables = set(names)

    def users(self) -> list[str]:
        if not self.variables:
            return [""] if os.path.isdir(self.path_for("")) else []
        found: list[str] = []
        self._walk("/", 0, {}, found)
        return found

    def _walk(self, directory: str, index: int, values: dict[str, str],
              found: list[str]) -> None:
        if index == len(self.parts):
            if os.path.isdir(directory):
                found.append(self._user(values))
            return
        variable, value = self.parts[index]
        if not variable:
            self._walk(os.path.join(directory, value), index + 1, values, found)
            return
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_dir():
                self._walk(entry.path, index + 1, {**values, value: entry.name}, found)

    def _user(self, values: dict[str, str]) -> str:
        if "u" in values:
            return values["u"]
        if "d" in values:
            return f"{values['n']}@{values['d']}"
        return values["n"]

    def path_for(self, user: str) -> str:
        local, _, domain = user.partition("@")
        values = {"u": user, "n": local, "d": domain}
        return "/" + "/".join(values[v] if variable else v for variable, v in self.parts)


# -- the drop --------------------------------------------------------------------------


class _Drop:
    """What the drop holds, as far as the checks need it."""

    def __init__(self, names: list[str], *, temp_prefix: str, temp_suffix: str) -> None:
        self.bundles: list[str] = []  # first volumes' names, as find_bundles lists them
        self.ours: dict[str, list[int]] = {}  # recipient -> our remembered bundles' numbers
        self.of_peers: list[str] = []  # peers' bundles, by their names
        self.cards = sorted(n for n in names if n.endswith(".bsc") and not n.startswith("."))
        self.revocations = any(n.endswith(".bsr") and not n.startswith(".") for n in names)
        self.our_temps = any(n.startswith(temp_prefix) and n.endswith(temp_suffix)
                             for n in names)


def _read_drop(site: _Site, drop: Path) -> _Drop:
    names = os.listdir(drop)
    temp_prefix = f".{site.name}_{site.site_id[:8]}_"
    if not any(n.endswith(BUNDLE_SUFFIX) or n.startswith(temp_prefix) for n in names):
        # No bundle and no temporary file of ours (a new drop): the format layer's
        # names need not be loaded.
        return _Drop(names, temp_prefix=temp_prefix, temp_suffix=TEMP_SUFFIX)
    from bundlesync.format.volumes import (  # noqa: PLC0415
        find_bundles,
        named_volumes,
        parse_sync_name,
    )

    result = _Drop(names, temp_prefix=temp_prefix, temp_suffix=TEMP_SUFFIX)
    peer_prefixes = {(p.own_name, p.site_id[:8]) for p in site.peers
                     if p.site_id[:8] != site.site_id[:8]}
    for path in find_bundles(drop):
        result.bundles.append(path.name)
        parsed = parse_sync_name(path.name)
        if parsed is None:
            raise GiveUp("a bundle known by its header only")
        if (parsed.origin_name, parsed.site_prefix) in peer_prefixes:
            result.of_peers.append(path.name)
            continue
        if (parsed.origin_name, parsed.site_prefix) != (site.name, site.site_id[:8]):
            raise GiveUp("a bundle known by its header only")
        # Site.remembered_bundle: named as one we recorded, with the recorded size.
        remembered = None
        for peer in site.index.bundle_seqs(parsed.incarnation):
            if not peer.startswith(parsed.recipient_prefix):
                continue
            size = site.index.sent_size(peer, parsed.incarnation, parsed.seq)
            if size is not None and _size_on_disk(named_volumes(path)) == size:
                remembered = peer
                break
        if remembered is None:
            raise GiveUp("a bundle the state does not remember writing")
        result.ours.setdefault(remembered, []).append(parsed.seq)
    return result


def _size_on_disk(volumes: list[Path]) -> int | None:
    try:
        return sum(volume.stat().st_size for volume in volumes)
    except OSError:
        return None


# -- export ----------------------------------------------------------------------------


def _export(site: _Site, request: Request) -> dict[str, Any]:
    from bundlesync.errors import LocalError  # noqa: PLC0415
    from bundlesync.keys import own_card_bytes  # noqa: PLC0415

    drop = request.drop
    if not drop.is_dir():
        raise GiveUp("the full path reports a drop that is not a directory")
    if not site.peers:
        raise GiveUp("the full path reports a site without peers")
    try:
        card = own_card_bytes(site.home / "keys")
    except LocalError as exc:
        raise GiveUp(exc.message) from exc
    if card is None:
        raise GiveUp("the card is made from the keys by the full path")
    _check_state(site)
    contents = _read_drop(site, drop)
    if contents.our_temps:
        raise GiveUp("leftover temporary files are removed by the full path")
    if any(len(seqs) > 1 for seqs in contents.ours.values()):
        raise GiveUp("a superseded bundle of ours is removed by the full path")
    _check_store(site)
    up_to_date = _check_peers(site)
    # Written as the full path writes them: the card (unless the drop holds it),
    # README.txt (unless it lists the bundles there), last-scan.
    from bundlesync.operations import readme  # noqa: PLC0415

    card_path = drop / f"{site.name}.bsc"
    readme_current = readme.readme_lists(drop, contents.bundles)
    if not readme_current and contents.bundles:
        raise GiveUp("README.txt describes bundles: the full path lists them")
    _place_card(card_path, card)
    if not readme_current:
        readme.write_readme(drop, readme.readme_text([], writer=site.name,
                                                     now_ms=site.started_ms))
    _record_scan(site)
    return {"local_changes": 0, "bundles": [], "up_to_date": up_to_date, "removed": [],
            "card": card_path.name, "warnings": [], "drop": str(drop),
            "readme": readme.README_NAME}


def _place_card(path: Path, card: bytes) -> None:
    from bundlesync.keys import write_file_atomically  # noqa: PLC0415

    try:
        if path.read_bytes() == card:
            return
    except OSError:
        pass  # missing or unreadable: written below (operations.export.place_card)
    write_file_atomically(path, card, mode=0o644)


def _check_peers(site: _Site) -> list[str]:
    """The peers' names, if every one is up to date (``export_drop``'s test)."""
    index = site.index
    vector = _vector_of(index.streams())
    logged = index.logged_streams()
    names = []
    for peer in sorted(site.peers, key=lambda p: p.name):
        row = index.peer(peer.site_id)
        if row is None or row[0] != peer.name:
            raise GiveUp("the peer's row is written by the full path")
        ack = _vector_of(_parse_vector(row[1]))
        last = index.last_sent(peer.site_id)
        if last is None or last[0] != site.incarnation or (
                _vector_of(_parse_vector(last[1])) != vector):
            raise GiveUp("the peer must hear from us")
        for stream_site, incarnation in logged:
            if index.has_change_above(stream_site, incarnation,
                                      ack.get((stream_site, incarnation), 0)):
                raise GiveUp("the peer lacks changes")
        if index.peer_wants_any(peer.site_id):
            raise GiveUp("the peer asks for bodies")
        names.append(peer.name)
    return names


def _parse_vector(text: str) -> list[tuple[str, int, int]]:
    """``state.codec.decode_vector``'s format: ``site,incarnation,counter;...``."""
    items = []
    for part in filter(None, text.split(";")):
        stream_site, incarnation, counter = part.split(",")
        items.append((stream_site, int(incarnation), int(counter)))
    return items


def _vector_of(rows: Any) -> dict[tuple[str, int], int]:
    # As VersionVector: streams at 0 count as absent.
    return {(str(s), int(i)): int(n) for s, i, n in rows if int(n) > 0}


# -- import ----------------------------------------------------------------------------


def _import(site: _Site, request: Request) -> dict[str, Any]:
    drop = request.drop
    if not drop.is_dir():
        raise GiveUp("the full path reports a drop that is not a directory")
    _check_state(site)
    if site.index.has_spooled():
        raise GiveUp("spooled bodies are cleared by the full path")
    spool = site.home / "spool"
    if spool.is_dir() and any(item.is_file() for item in spool.iterdir()):
        raise GiveUp("spool files are removed by the full path")
    contents = _read_drop(site, drop)
    if contents.of_peers or contents.revocations:
        raise GiveUp("peers' bundles and revocations are read by the full path")
    _check_card_updates(site, drop, contents.cards)
    _check_store(site)
    _record_scan(site)
    changes = {"added": 0, "expunged": 0, "flag_changes": 0, "conflicts": 0,
               "mailboxes": [], "mailbox_changes": [], "subscription_changes": 0,
               "missing_bodies": [], "failures": {}, "warnings": [], "failed_users": []}
    return {"dry_run": False, "local_changes": 0, "bundles": [], "changes": changes,
            "new_incarnation": None, "held_back": {}, "warnings": [],
            "held_back_users": 0}


def _check_card_updates(site: _Site, drop: Path, cards: list[str]) -> None:
    """Give up if a card in the drop may update a trusted peer's
    (``keys.take_card_updates`` without checking signatures)."""
    from bundlesync.keys import InvalidCard, PeerCard, TrustStore, read_statement  # noqa: PLC0415

    trusted = {c.site_id: c for c in TrustStore(site.home / "peers").list(verify=False)}
    for name in cards:
        try:
            card = PeerCard.from_text(read_statement(drop / name, "card"),
                                      source=str(drop / name), verify=False)
        except InvalidCard:
            continue  # nobody's update, as take_card_updates finds
        seen = trusted.get(card.site_id)
        if seen is not None and not (seen.signing_public == card.signing_public
                                     and card.created_ms <= seen.created_ms):
            raise GiveUp("a card that may be an update")


def _record_scan(site: _Site) -> None:
    from bundlesync.operations.freshness import record_scan  # noqa: PLC0415

    record_scan(site.home, site.started_ms, whole=True)


# -- output ----------------------------------------------------------------------------


def _say(request: Request, result: dict[str, Any]) -> None:
    """The lines the full path prints for people (``export_cmd``, ``import_cmd``)."""
    if request.json or request.quiet:
        return
    if request.command == "export":
        print("Scanned the store: 0 new local changes since the last run")
        for name in result["up_to_date"]:
            print(f"Nothing new for {name}: it has acknowledged everything.")
    else:
        print(f"No bundles for this site in {request.drop}.")


def _finish(request: Request, code: int, result: dict[str, Any] | None, *,
            error: dict[str, Any] | None) -> int:
    """The JSON envelope of ``cli.output.Output.envelope`` under ``--json``."""
    if request.json:
        print(json.dumps({"schema_version": JSON_SCHEMA_VERSION, "command": request.command,
                          "ok": code == 0, "exit_code": code, "result": result,
                          "warnings": [], "error": error},
                         indent=2, sort_keys=True, ensure_ascii=False))
    sys.stdout.flush()
    return code
