"""No hang and no unbounded read on what lies in a drop or is given as a card.

A FIFO named like a bundle (or in place of one of its volumes) used to block the
import forever while it held the site lock; ``verify`` on a FIFO too; and
``peer add NAME /dev/zero`` read until memory ran out.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from bundlesync.cli import main
from bundlesync.errors import EXIT_BUNDLE_REJECTED, EXIT_LOCAL, EXIT_OK
from bundlesync.operations.demo import USERS
from tests.operations.conftest import Sites

ALICE, _BOB = USERS


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """Turn a hang into a failure instead of a stuck suite."""
    def fail(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("the operation hung on a FIFO")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _pair(sites: Sites) -> None:
    sites.add("alpha")
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.deliver("alpha", ALICE, ("INBOX",), 1)


def test_a_fifo_named_like_a_bundle_does_not_hang_the_import(sites: Sites) -> None:
    _pair(sites)
    sites.export("alpha")
    os.mkfifo(sites.drop / "x.bsb")
    result = sites.import_("bravo")
    assert sum(tally.added for tally in result.report.tallies.values()) == 1


def test_a_fifo_in_place_of_a_volume_does_not_hang_the_import(sites: Sites) -> None:
    _pair(sites)
    for number in range(3):
        noise = os.urandom(12_000).hex().encode()  # incompressible: several volumes
        sites.stores["alpha"].add_message(ALICE, ("INBOX",), key=f"1700000000.noise{number}",
                                          data=b"Subject: x\r\n\r\n" + noise,
                                          flags=frozenset(), internal_date=1_700_000_000)
    sites.export("alpha", max_volume_size=8 * 1024)
    volumes = sorted(p for p in sites.drop.iterdir() if p.name.endswith(".bsb"))
    assert len(volumes) > 2, volumes
    second = volumes[1]
    second.unlink()
    os.mkfifo(second)
    result = sites.import_("bravo")
    assert result.rejected, result.bundles


def test_verify_on_a_fifo_is_an_error_not_a_hang(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "x.bsb"
    os.mkfifo(fifo)
    code = main(["--home", str(tmp_path / "home"), "verify", str(fifo)])
    err = capsys.readouterr().err
    assert code in (EXIT_BUNDLE_REJECTED, EXIT_LOCAL), err
    assert "regular file" in err


@pytest.mark.parametrize("card", ["/dev/zero", "fifo", "big"])
def test_peer_add_reads_a_card_file_with_a_size_limit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], card: str) -> None:
    home = tmp_path / "home"
    (tmp_path / "mail").mkdir()
    assert main(["--home", str(home), "init", "--site", "alpha",
                 "--store", str(tmp_path / "mail")]) == EXIT_OK
    if card == "fifo":
        os.mkfifo(tmp_path / "fifo")
    elif card == "big":
        (tmp_path / "big").write_bytes(b"x" * 10_000_000)
    path = card if card.startswith("/") else str(tmp_path / card)
    capsys.readouterr()
    code = main(["--home", str(home), "peer", "add", "bravo", path, "--yes"])
    err = capsys.readouterr().err
    assert code != EXIT_OK
    assert "card" in err.lower() and "internal error" not in err


@pytest.mark.parametrize("store", ["/nonexistent/%u/Maildir", "relative/%u", "%x/Maildir",
                                   "/nonexistent/Maildir"])
def test_init_with_a_bad_store_writes_nothing(tmp_path: Path, store: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code = main(["--home", str(home), "init", "--site", "alpha", "--store", store])
    err = capsys.readouterr().err
    assert code in (2, 4), err
    assert "internal error" not in err
    # No key, configuration or state (the site lock file may stay: it is empty).
    assert not home.exists() or [p.name for p in home.iterdir()] in ([], ["lock"])
    # A corrected second init is not told "already set up".
    (tmp_path / "mail").mkdir()
    assert main(["--home", str(home), "init", "--site", "alpha",
                 "--store", str(tmp_path / "mail" / "%u")]) == EXIT_OK


@pytest.mark.parametrize("command", [["status"], ["export", "DROP"], ["import", "DROP"]])
def test_a_mistyped_home_creates_nothing(tmp_path: Path, command: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "typo" / "home"
    drop = tmp_path / "drop"
    drop.mkdir()
    args = [str(drop) if word == "DROP" else word for word in command]
    code = main(["--home", str(home), *args])
    err = capsys.readouterr().err
    assert code == EXIT_LOCAL, err
    assert "no site home at" in err and "bundlesync init" in err
    assert not (tmp_path / "typo").exists()
