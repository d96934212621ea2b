"""The quick path of a no-change run: the full path's output, and it gives up on any change.

Each test runs both paths on the same sites: ``operations.quick.run`` (None when
it gives up) and ``bundlesync.cli.main`` (the full path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bundlesync.cli import main as full_main
from bundlesync.operations import quick
from bundlesync.operations.freshness import SCANNED_NAME, last_whole_scan
from bundlesync.stores.stamps import FINE_RACY_NS
from tests.cli.conftest import ALICE, Net, Result, copy_net, exchange_everything

# Young stamps are racy for 50 ms on a file system with fine timestamps (2 s on a
# coarse one, where the quick path gives up and the full path runs). A sleep lasts at
# least as long as asked and a file's stamp is never later than the clock, so 10 ms
# past the window is past it on any machine, however busy.
SETTLE_S = FINE_RACY_NS / 1e9 + 0.01


def _scanned(net: Net) -> None:
    """alpha has scanned everything since its store last changed (past the racy window)."""
    time.sleep(SETTLE_S)
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    assert net.at("alpha", "import", str(net.drop), "-q").code == 0
    time.sleep(SETTLE_S)


def _settled(net: Net) -> None:
    exchange_everything(net)
    _scanned(net)


def _quick(net: Net, capsys: pytest.CaptureFixture[str], name: str, *args: str,
           why: list[str] | None = None) -> Result | None:
    code = quick.run(["--home", str(net.homes[name]), *args], why=why)
    out, err = capsys.readouterr()
    return None if code is None else Result(code, out, err)


def _full(net: Net, capsys: pytest.CaptureFixture[str], name: str, *args: str) -> Result:
    code = full_main(["--home", str(net.homes[name]), *args])
    out, err = capsys.readouterr()
    return Result(code, out, err)


def _fresh(net: Net, name: str) -> Path:
    drop = net.root / name
    drop.mkdir()
    return drop


def _readme_without_time(drop: Path) -> list[str]:
    return [line for line in (drop / "README.txt").read_text(encoding="utf-8").splitlines()
            if not line.startswith("Last written by")]


@pytest.fixture(scope="module")
def _exchanged_template(tmp_path_factory: pytest.TempPathFactory, _net_template: Path) -> Path:
    # The exchanges once for the module; each test copies them (copies keep the
    # folders' mtimes, so the stamps still hold) and scans once more itself, as
    # the copies' new ctimes are younger than any scan before.
    root = tmp_path_factory.mktemp("exchanged") / "net"

    def call(*args: str) -> Result:
        return Result(full_main(list(args)), "", "")

    exchange_everything(copy_net(_net_template, root, call))
    return root


@pytest.fixture
def settled(tmp_path: Path, run: Callable[..., Result], _exchanged_template: Path) -> Net:
    net = copy_net(_exchanged_template, tmp_path / "net", run)
    _scanned(net)
    return net


# -- the same output as the full path ------------------------------------------------


def test_a_no_change_export_into_a_new_drop_says_and_writes_what_the_full_path_does(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    one, two = _fresh(net, "one"), _fresh(net, "two")
    fast = _quick(net, capsys, "alpha", "export", str(one), "--json")
    assert fast is not None, "the quick path gave up on a no-change export"
    full = _full(net, capsys, "alpha", "export", str(two), "--json")
    assert (fast.code, fast.err) == (full.code, full.err) == (0, "")
    fast_json, full_json = fast.json, full.json
    assert fast_json["result"].pop("drop") == str(one)
    assert full_json["result"].pop("drop") == str(two)
    assert fast_json == full_json
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert (one / "alpha.bsc").read_bytes() == (two / "alpha.bsc").read_bytes()
    assert _readme_without_time(one) == _readme_without_time(two)


@pytest.mark.parametrize("options", [(), ("-q",), ("--quiet",)])
def test_the_text_of_a_no_change_export_and_import_is_the_full_paths(
        settled: Net, capsys: pytest.CaptureFixture[str], options: tuple[str, ...]) -> None:
    net = settled
    for command in ("export", "import"):
        fast = _quick(net, capsys, "alpha", command, str(net.drop), *options)
        assert fast is not None, command
        full = _full(net, capsys, "alpha", command, str(net.drop), *options)
        assert (fast.code, fast.out, fast.err) == (full.code, full.out, full.err)
        assert bool(fast.out) == (not options)


def test_a_no_change_import_says_what_the_full_path_says(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    # What the benchmark's import sees: the peer's card and README.txt, no bundle.
    drop = _fresh(net, "from-bravo")
    assert _full(net, capsys, "bravo", "export", str(drop), "-q").code == 0
    assert not list(drop.glob("*.bsb"))
    fast = _quick(net, capsys, "alpha", "--json", "import", str(drop))
    assert fast is not None
    full = _full(net, capsys, "alpha", "--json", "import", str(drop))
    assert (fast.code, fast.out, fast.err) == (full.code, full.out, full.err)
    assert fast.json["result"]["bundles"] == []


def test_a_quick_run_writes_only_the_lock_and_last_scan_in_the_home(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    home = net.homes["alpha"]
    before = {p.name: p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}
    drop_before = {p.name: p.stat().st_mtime_ns for p in net.drop.iterdir()}
    for command in ("export", "import"):
        assert _quick(net, capsys, "alpha", command, str(net.drop), "-q") is not None
    after = {p.name: p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}
    changed = {name for name in before.keys() | after.keys()
               if before.get(name) != after.get(name)}
    assert changed <= {"lock", SCANNED_NAME}
    assert {p.name: p.stat().st_mtime_ns for p in net.drop.iterdir()} == drop_before
    assert (home / "lock").read_text(encoding="ascii") == f"{os.getpid()}\n"
    # A quick run vouches for every user and mailbox, as the scan it stands for.
    scanned = last_whole_scan(home)
    assert scanned is not None and abs(scanned - time.time() * 1000) < 60_000


def test_the_command_and_python_m_take_the_quick_path(settled: Net) -> None:
    net = settled
    args = ["--home", str(net.homes["alpha"]), "export", str(net.drop), "-q"]
    probe = ("import json, sys\n"
             "from bundlesync.__main__ import main\n"
             f"code = main({args!r})\n"
             "print(code, json.dumps(sorted(m for m in ('click', 'bundlesync.core.model', "
             "'bundlesync.state.index', 'bundlesync.cli') if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    code, loaded = done.stdout.split(" ", 1)
    assert (int(code), json.loads(loaded)) == (0, [])
    script = Path(sys.executable).parent / "bundlesync"
    if script.exists():  # the installed command starts there too
        assert "from bundlesync.__main__ import main" in script.read_text(encoding="utf-8")


# -- any change: the full path runs --------------------------------------------------


def _gives_up(net: Net, capsys: pytest.CaptureFixture[str], command: str = "export", *,
             because: str) -> None:
    time.sleep(SETTLE_S)  # past the racy window: the stamp itself must tell
    why: list[str] = []
    assert _quick(net, capsys, "alpha", command, str(net.drop), "-q", why=why) is None
    assert why and because in why[0], why


def _inbox(net: Net) -> Path:
    return Path(net.mail("alpha").maildir_path(ALICE))


def _local_changes(net: Net, capsys: pytest.CaptureFixture[str]) -> int:
    """What the full path then finds (the change was real)."""
    full = _full(net, capsys, "alpha", "export", str(net.drop), "--json")
    assert full.code == 0, full.err
    return int(full.json["result"]["local_changes"])


def test_a_delivery_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    (_inbox(net) / "new" / "1800000000.M1P1.quick").write_bytes(
        b"Subject: new\r\n\r\nhello\r\n")
    _gives_up(net, capsys, because="stamp moved")
    _gives_up(net, capsys, "import", because="stamp moved")
    assert _local_changes(net, capsys) == 1


def test_a_flag_change_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    message = next(p for p in (_inbox(net) / "cur").iterdir() if "F" not in p.name)
    base, _, flags = message.name.partition(":2,")
    message.rename(message.with_name(f"{base}:2,{''.join(sorted(flags + 'F'))}"))
    _gives_up(net, capsys, because="stamp moved")
    assert _local_changes(net, capsys) == 1


def test_a_new_folder_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    for sub in ("cur", "new", "tmp"):
        (_inbox(net) / ".Quick" / sub).mkdir(parents=True)
    _gives_up(net, capsys, because="folders were created")
    assert _local_changes(net, capsys) == 1


def test_a_renamed_folder_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    folder = next(p for p in _inbox(net).iterdir() if p.name.startswith(".") and p.is_dir())
    folder.rename(folder.with_name(folder.name + "Renamed"))
    _gives_up(net, capsys, because="folders were created")
    assert _local_changes(net, capsys) >= 1


def test_a_changed_subscription_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    store = net.mail("alpha")
    folder = next(f.path for f in store.folders(ALICE) if f.path not in
                  store.subscriptions(ALICE))
    store.set_subscriptions(ALICE, store.subscriptions(ALICE) | {folder})
    _gives_up(net, capsys, because="subscriptions")
    assert _local_changes(net, capsys) == 1


def test_a_subscriptions_file_rewritten_in_place_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    # No directory entry changes and no folder's stamp moves: only the file's ctime.
    net = settled
    store = net.mail("alpha")
    folder = next(f.path for f in store.folders(ALICE) if f.path not in
                  store.subscriptions(ALICE))
    store.set_subscriptions(ALICE, store.subscriptions(ALICE) | {folder})
    time.sleep(SETTLE_S)  # older than the next whole scan by more than the racy window
    _settled(net)  # bravo has it, and has acknowledged it
    subscriptions = _inbox(net) / "subscriptions"
    text = subscriptions.read_bytes()
    time.sleep(SETTLE_S)
    why: list[str] = []
    assert _quick(net, capsys, "alpha", "export", str(net.drop), "-q", why=why) is not None, why
    with subscriptions.open("r+b") as handle:  # unsubscribed by hand, same inode
        handle.write(text.replace("/".join(folder).encode(), b"").rstrip(b"\n") + b"\n")
        handle.truncate()
    _gives_up(net, capsys, because="subscriptions")
    assert _local_changes(net, capsys) == 1


def test_a_new_user_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    net.mail("alpha").ensure_user("carol@example.org")
    _gives_up(net, capsys, because="users were added")
    assert _local_changes(net, capsys) >= 1


def test_a_young_stamp_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    # A stamp taken within the racy window proves nothing: a change in the same
    # tick would not move it.
    net = settled
    cur = _inbox(net) / "cur"
    os.utime(cur, ns=(time.time_ns(), time.time_ns()))
    assert _quick(net, capsys, "alpha", "export", str(net.drop), "-q") is None


def test_a_bundle_for_us_in_the_drop_makes_the_import_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    bravo_inbox = Path(net.mail("bravo").maildir_path(ALICE))
    (bravo_inbox / "new" / "1800000000.M2P2.quick").write_bytes(b"Subject: b\r\n\r\nb\r\n")
    time.sleep(SETTLE_S)
    assert _full(net, capsys, "bravo", "export", str(net.drop), "-q").code == 0
    _gives_up(net, capsys, "import", because="peers' bundles")
    full = _full(net, capsys, "alpha", "import", str(net.drop), "--json")
    assert full.json["result"]["changes"]["added"] == 1


def test_a_config_change_makes_the_quick_path_give_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    config = net.homes["alpha"] / "bundlesync.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        "exclude = []", 'exclude = ["Trash"]'), encoding="utf-8")
    _gives_up(net, capsys, because="mailbox filters")
    # And a filtered scan is no whole scan: lifting the filter still takes the full path.
    assert _full(net, capsys, "alpha", "export", str(net.drop), "-q").code == 0
    assert last_whole_scan(net.homes["alpha"]) is None
    config.write_text(config.read_text(encoding="utf-8").replace(
        'exclude = ["Trash"]', "exclude = []"), encoding="utf-8")
    _gives_up(net, capsys, because="no whole scan")


@pytest.mark.parametrize("args", [("-u", ALICE), ("--include", "INBOX"), ("-v",),
                                  ("--dry-run",), ("--to", "bravo"), ("--lock-wait", "1")])
def test_options_it_does_not_know_are_the_full_paths(
        settled: Net, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    assert _quick(settled, capsys, "alpha", "export", str(settled.drop), *args) is None


def test_without_a_whole_scan_on_record_the_quick_path_gives_up(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    net = settled
    (net.homes["alpha"] / SCANNED_NAME).unlink()
    _gives_up(net, capsys, because="no whole scan")
    assert _full(net, capsys, "alpha", "export", str(net.drop), "-q").code == 0
    assert _quick(net, capsys, "alpha", "export", str(net.drop), "-q") is not None


def test_a_held_lock_is_the_full_paths_to_report(
        settled: Net, capsys: pytest.CaptureFixture[str]) -> None:
    import fcntl

    net = settled
    with open(net.homes["alpha"] / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert _quick(net, capsys, "alpha", "export", str(net.drop), "-q") is None


# -- the command line and the mirrored constants ---------------------------------------


def test_parse_reads_only_the_plain_forms() -> None:
    request = quick.parse(["--json", "export", "d", "--home=h", "-q"])
    assert request is not None
    assert (request.command, request.drop, request.home, request.json, request.quiet) == (
        "export", Path("d"), Path("h"), True, True)
    for args in (["export"], ["export", "a", "b"], ["status", "d"], ["export", "d", "--"],
                 ["--home", "a", "--home", "b", "export", "d"], ["export", "d", "--home"],
                 ["export", "d", "-qv"], ["export", ""], ["--help"]):
        assert quick.parse(args) is None, args


def test_the_quick_paths_constants_are_the_modules_it_mirrors() -> None:
    from bundlesync.cli.output import JSON_SCHEMA_VERSION
    from bundlesync.format.volumes import SUFFIX, TEMP_SUFFIX
    from bundlesync.operations.config import CONFIG_NAME
    from bundlesync.operations.site import STATE_NAME
    from bundlesync.operations.spent import MARK_NAME
    from bundlesync.state import glance
    from bundlesync.state.index import SCHEMA_VERSION
    from bundlesync.stores.base import INBOX
    from bundlesync.stores.maildir import SUBSCRIPTIONS, UIDLIST

    assert (glance.SCHEMA_VERSION, quick.INBOX, quick.JSON_SCHEMA_VERSION) == (
        SCHEMA_VERSION, INBOX, JSON_SCHEMA_VERSION)
    assert (quick.CONFIG_NAME, quick.STATE_NAME, quick.MARK_NAME) == (
        CONFIG_NAME, STATE_NAME, MARK_NAME)
    assert (quick.SUBSCRIPTIONS, quick.UIDLIST) == (SUBSCRIPTIONS, UIDLIST)
    assert (quick.BUNDLE_SUFFIX, quick.TEMP_SUFFIX) == (SUFFIX, TEMP_SUFFIX)


def test_a_configuration_as_init_writes_it_is_one_the_quick_path_follows(
        tmp_path: Path) -> None:
    from bundlesync.operations.config import SiteConfig, write_config

    path = tmp_path / "bundlesync.toml"
    write_config(path, SiteConfig("alpha", "/srv/mail/%d/%n/Maildir"))
    assert quick._read_config(path) == "/srv/mail/%d/%n/Maildir"


def test_the_stored_marks_are_read_as_the_index_writes_them() -> None:
    from bundlesync.state.codec import encode_marks

    for marks in [(0, 0), (5, 1_796_079_920_894_000_000), (2**32, 2**40), (23, 24),
                  (1_796_079_920_894_123_456, 1_796_079_920_894_000_001)]:
        assert quick._cbor_marks(marks) == encode_marks(marks)
