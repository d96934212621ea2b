"""A run with nothing to do does only what it must: no bundle code, no write, no sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bundlesync.cli import main
from bundlesync.keys import PeerCard, load_identity
from bundlesync.operations import quick
from bundlesync.stores.stamps import FINE_RACY_NS
from tests.cli.conftest import Net, Result, copy_net

# Loaded only when a bundle is written or read.
_HEAVY = ("cryptography", "zstandard", "bundlesync.format.reader", "bundlesync.format.writer")

# The lock names the process holding it and last-scan says when the store was
# last scanned (for `status`): both change on every run, by design, unsynced.
_CHANGE_EVERY_RUN = {"lock", "last-scan"}

# Past the racy window of fine timestamps (a sleep is never shorter than asked).
SETTLE_S = FINE_RACY_NS / 1e9 + 0.01


def _settled(net: Net) -> None:
    """alpha and bravo have exchanged everything: each is up to date for the other."""
    for writer, reader in (("alpha", "bravo"), ("bravo", "alpha"), ("alpha", "bravo")):
        assert net.at(writer, "export", str(net.drop), "-q").code == 0
        done = net.at(reader, "import", str(net.drop), "-q")
        assert done.code == 0, done.err


@pytest.fixture(scope="module")
def _settled_template(tmp_path_factory: pytest.TempPathFactory, _net_template: Path) -> Path:
    # Settled once for the module; each test gets a copy (the stamps the copy moves
    # only make the next scan list the folders again: nothing in them is new).
    root = tmp_path_factory.mktemp("settled") / "net"

    def call(*args: str) -> Result:
        return Result(main(list(args)), "", "")

    _settled(copy_net(_net_template, root, call))
    return root


@pytest.fixture
def settled(tmp_path: Path, run: Callable[..., Result], _settled_template: Path) -> Net:
    """alpha and bravo, settled as by :func:`_settled`."""
    return copy_net(_settled_template, tmp_path / "net", run)


def _loaded_by(home: Path, *args: str) -> tuple[int, list[str]]:
    """Run the CLI in a fresh interpreter; its exit code and the heavy modules it loaded."""
    probe = (
        "import json, sys\n"
        "from bundlesync.cli import main\n"
        f"code = main({['--home', str(home), *args, '-q']!r})\n"
        f"print(code, json.dumps([m for m in {_HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    code, loaded = done.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(code), json.loads(loaded)


def _files(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every file below ``directory``: (inode, mtime, size), but those changed by design."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name not in _CHANGE_EVERY_RUN and (
                not path.name.startswith("state.sqlite-")):  # WAL files come and go
            info = path.stat()
            found[str(path.relative_to(directory))] = (info.st_ino, info.st_mtime_ns,
                                                       info.st_size)
    return found


def test_a_no_change_export_loads_no_bundle_code(settled: Net) -> None:
    net = settled
    code, loaded = _loaded_by(net.homes["alpha"], "export", str(net.drop))
    assert (code, loaded) == (0, [])


def test_an_export_that_writes_a_bundle_loads_the_writer(net: Net) -> None:
    # The probe above would pass with a CLI that never writes: this one shows it
    # tells the difference.
    code, loaded = _loaded_by(net.homes["alpha"], "export", str(net.drop))
    assert code == 0
    assert {"cryptography", "zstandard", "bundlesync.format.writer"} <= set(loaded)


def test_a_no_change_import_of_a_drop_without_bundles_for_us_loads_no_bundle_code(
        settled: Net) -> None:
    net = settled
    # Only alpha's own bundles, cards and README: alpha decides from names alone.
    for path in net.drop.glob("bravo_*.bsb"):
        path.unlink()
    code, loaded = _loaded_by(net.homes["alpha"], "import", str(net.drop))
    assert (code, loaded) == (0, [])


def test_a_bundle_for_us_is_still_read_and_verified(settled: Net) -> None:
    net = settled
    # bravo's last bundle to alpha was applied; its id alone cannot say it is the
    # same bundle (a restored bravo may reuse the number), so it is verified.
    assert list(net.drop.glob("bravo_*.bsb"))
    code, loaded = _loaded_by(net.homes["alpha"], "import", str(net.drop))
    assert code == 0
    assert {"cryptography", "bundlesync.format.reader"} <= set(loaded)


def test_a_no_change_export_writes_nothing_in_the_drop_or_the_home(settled: Net) -> None:
    net = settled
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0  # README, card in place
    drop_before, home_before = _files(net.drop), _files(net.homes["alpha"])
    drop_mtime = net.drop.stat().st_mtime_ns
    again = net.at("alpha", "export", str(net.drop), "--json")
    assert again.code == 0, again.err
    assert again.json["result"]["bundles"] == []
    assert again.json["result"]["up_to_date"] == ["bravo"]
    assert _files(net.drop) == drop_before
    assert net.drop.stat().st_mtime_ns == drop_mtime  # nothing created, renamed or removed
    assert _files(net.homes["alpha"]) == home_before


def _syncs(net: Net, name: str, *args: str) -> list[str]:
    """The fsync, fdatasync and syncfs calls of one CLI run (strace)."""
    trace = net.root / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o",
                    str(trace), sys.executable, "-m", "bundlesync", "--home",
                    str(net.homes[name]), *args, "-q"],
                   check=True, env=dict(os.environ), capture_output=True)
    return [line for line in trace.read_text(encoding="utf-8").splitlines() if "sync(" in line]


def test_no_change_runs_sync_nothing(settled: Net) -> None:
    net = settled
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    if not _have_strace():
        return  # the file checks above still hold; the count needs strace
    assert net.at("alpha", "import", str(net.drop), "-q").code == 0
    assert _syncs(net, "alpha", "export", str(net.drop)) == []
    assert _syncs(net, "alpha", "import", str(net.drop)) == []
    # The probe sees syncs when there are some: a new drop gets the card, synced.
    (net.root / "other").mkdir()
    assert _syncs(net, "alpha", "export", str(net.root / "other")) != []


def test_a_no_change_import_writes_nothing_in_the_home(settled: Net) -> None:
    net = settled
    assert net.at("alpha", "import", str(net.drop), "-q").code == 0
    before = _files(net.homes["alpha"])
    again = net.at("alpha", "import", str(net.drop), "-q")
    assert again.code == 0, again.err
    assert _files(net.homes["alpha"]) == before


def _have_strace() -> bool:
    try:
        subprocess.run(["strace", "-V"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def test_a_changed_drop_gets_a_new_readme_and_the_card_back(settled: Net) -> None:
    net = settled
    card = net.drop / "alpha.bsc"
    card.write_text("damaged\n", encoding="utf-8")
    (net.drop / "README.txt").unlink()
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    assert card.read_bytes() == (net.homes["alpha"] / "keys" / "site.bsc").read_bytes()
    readme = (net.drop / "README.txt").read_text(encoding="utf-8")
    for path in net.drop.glob("*.bsb"):
        assert f"  {path.name}\n" in readme


def test_a_no_change_export_into_a_new_drop_signs_nothing(settled: Net) -> None:
    # The benchmark's case: every run a new drop, which gets this site's card.
    net = settled
    fresh = net.root / "fresh"
    fresh.mkdir()
    code, loaded = _loaded_by(net.homes["alpha"], "export", str(fresh))
    assert (code, loaded) == (0, [])
    made = load_identity(net.homes["alpha"] / "keys").card()
    assert PeerCard.read(fresh / "alpha.bsc") == made
    assert (fresh / "alpha.bsc").read_text(encoding="utf-8") == made.to_text()


def test_a_card_file_that_is_not_the_keys_card_is_not_handed_out(settled: Net) -> None:
    net = settled
    own = net.homes["alpha"] / "keys" / "site.bsc"
    own.write_text(own.read_text(encoding="utf-8").replace("created: ", "created: 1"),
                   encoding="utf-8")
    fresh = net.root / "fresh"
    fresh.mkdir()
    assert net.at("alpha", "export", str(fresh), "-q").code == 0
    made = load_identity(net.homes["alpha"] / "keys").card()
    assert (fresh / "alpha.bsc").read_text(encoding="utf-8") == made.to_text()


def test_our_bundle_name_with_another_size_is_opened(settled: Net) -> None:
    # A name is taken for the bundle the state recorded only with the recorded size.
    net = settled
    (ours,) = net.drop.glob("alpha_*.bsb")
    with ours.open("ab") as stick:
        stick.write(b"\0")
    code, loaded = _loaded_by(net.homes["alpha"], "export", str(net.drop))
    assert code == 0
    assert "bundlesync.format.reader" in loaded


def _command(net: Net, name: str, *args: str) -> tuple[int, str]:
    """The ``bundlesync`` command itself (``python -m bundlesync``: the quick path first)."""
    done = subprocess.run([sys.executable, "-m", "bundlesync", "--home", str(net.homes[name]),
                           *args], check=False, capture_output=True, text=True,
                          env=dict(os.environ))
    return done.returncode, done.stdout


def test_the_commands_quick_answer_is_the_full_paths_and_writes_nothing(settled: Net) -> None:
    net = settled
    for path in net.drop.glob("bravo_*.bsb"):
        path.unlink()  # a bundle for alpha is verified: only the full path does that
    time.sleep(SETTLE_S)  # the copy's stamps are young: let the scan below see them settled
    for command in ("export", "import"):
        assert net.at("alpha", command, str(net.drop), "-q").code == 0
    time.sleep(SETTLE_S)  # past the racy window of the stamps just written
    drop_before, home_before = _files(net.drop), _files(net.homes["alpha"])
    for command in ("export", "import"):
        why: list[str] = []
        code = quick.run(["--home", str(net.homes["alpha"]), command, str(net.drop), "-q"],
                         why=why)
        assert code == 0, why  # the quick path answers this run
        fast = _command(net, "alpha", command, str(net.drop), "--json")
        full = net.at("alpha", command, str(net.drop), "--json")
        assert fast == (full.code, full.out)
    assert _files(net.drop) == drop_before
    assert _files(net.homes["alpha"]) == home_before
