"""The site commands through the real CLI entry point: exit codes and messages."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from bundlesync.cli import main
from bundlesync.errors import (
    EXIT_BUNDLE_REJECTED,
    EXIT_LOCAL,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
)
from bundlesync.operations.demo import populate
from bundlesync.stores.maildir import MaildirStore


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def two_sites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    template = tmp_path / "alpha-mail" / "%d" / "%n" / "Maildir"
    (tmp_path / "alpha-mail").mkdir()
    (tmp_path / "bravo-mail").mkdir()
    populate(MaildirStore(str(template)), per_folder=2)
    paths = {"alpha": tmp_path / "alpha", "bravo": tmp_path / "bravo", "drop": tmp_path / "drop"}
    paths["drop"].mkdir()
    for name, mail in (("alpha", "alpha-mail"), ("bravo", "bravo-mail")):
        code, out, _ = run(capsys, "--home", str(paths[name]), "init", "--site", name,
                           "--store", str(tmp_path / mail / "%d" / "%n" / "Maildir"))
        assert code == EXIT_OK, out
        assert "fingerprint" in out
        run(capsys, "--home", str(paths[name]), "key", "export", str(tmp_path / f"{name}.card"))
    code, out, _ = run(capsys, "--home", str(paths["alpha"]), "peer", "add", "bravo",
                       str(tmp_path / "bravo.card"), "--yes")
    assert code == EXIT_OK and "Peer bravo added" in out
    code, _, _ = run(capsys, "--home", str(paths["bravo"]), "peer", "add", "alpha",
                     str(tmp_path / "alpha.card"), "--yes")
    assert code == EXIT_OK
    return paths


def test_round_trip_through_the_cli(two_sites: dict[str, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    alpha, bravo, drop = two_sites["alpha"], two_sites["bravo"], two_sites["drop"]
    code, out, _ = run(capsys, "--home", str(alpha), "export", str(drop), "--json")
    assert code == EXIT_OK
    exported = json.loads(out)["result"]
    assert exported["bundles"][0]["peer"] == "bravo"
    assert (drop / "alpha.bsc").exists()
    code, out, _ = run(capsys, "--home", str(bravo), "import", str(drop), "--dry-run", "-v")
    assert code == EXIT_OK and "would:" in out and "INBOX +" in out
    code, out, _ = run(capsys, "--home", str(bravo), "import", str(drop))
    assert code == EXIT_OK and "Applied bundle 1 from alpha" in out
    code, out, _ = run(capsys, "--home", str(bravo), "import", str(drop))
    assert code == EXIT_OK and "already applied" in out
    code, out, _ = run(capsys, "--home", str(bravo), "export", str(drop))
    assert code == EXIT_OK
    code, out, _ = run(capsys, "--home", str(alpha), "import", str(drop), "--json")
    assert code == EXIT_OK
    code, out, _ = run(capsys, "--home", str(alpha), "status", "--json")
    status = json.loads(out)["result"]
    assert status["peers"][0]["pending_changes"] == 0
    code, out, _ = run(capsys, "--home", str(alpha), "export", str(drop))
    assert "Nothing new for bravo" in out


def test_rejected_bundle_exits_3_and_says_so(two_sites: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "--home", str(two_sites["alpha"]), "export", str(two_sites["drop"]))
    bundle = next(p for p in two_sites["drop"].iterdir() if p.suffix == ".bsb")
    data = bytearray(bundle.read_bytes())
    data[-10] ^= 0xFF
    bundle.write_bytes(bytes(data))
    code, _out, err = run(capsys, "--home", str(two_sites["bravo"]), "import",
                          str(two_sites["drop"]))
    assert code == EXIT_BUNDLE_REJECTED
    assert "REJECTED" in err and "export again" in err


def test_unknown_peer_is_a_usage_error(two_sites: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "--home", str(two_sites["alpha"]), "export",
                          str(two_sites["drop"]), "--to", "nobody")
    assert code == EXIT_USAGE
    assert "no peer is called 'nobody'" in err and "hint:" in err


def test_uninitialised_home_is_a_local_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "--home", str(tmp_path / "nowhere"), "status")
    assert code == EXIT_LOCAL
    assert "error:" in err and "bundlesync init" in err


def test_second_run_on_a_site_is_refused_with_75(two_sites: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    lock = two_sites["alpha"] / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _out, err = run(capsys, "--home", str(two_sites["alpha"]), "export",
                              str(two_sites["drop"]))
    finally:
        os.close(fd)
    assert code == EXIT_LOCKED
    assert "another bundlesync run" in err


def test_init_twice_is_refused(two_sites: dict[str, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "--home", str(two_sites["alpha"]), "init", "--site", "x",
                          "--store", "/nonexistent")
    assert code == EXIT_LOCAL
    assert "already set up" in err


def test_peer_list_and_remove(two_sites: dict[str, Path],
                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--home", str(two_sites["alpha"]), "peer", "list", "--json")
    assert [p["name"] for p in json.loads(out)["result"]["peers"]] == ["bravo"]
    code, out, _ = run(capsys, "--home", str(two_sites["alpha"]), "peer", "remove", "bravo",
                       "--yes")
    assert code == EXIT_OK and "removed" in out
    code, out, _ = run(capsys, "--home", str(two_sites["alpha"]), "peer", "list")
    assert "No peers yet" in out
