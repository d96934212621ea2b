"""A backup interrupted with Ctrl-C: exit 130 and a message that says what becomes of
the packs it wrote (archive-v1 §8, §10): no snapshot, the next backup reuses what an
index lists, prune removes the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundlesync.archive import backup as backup_module
from bundlesync.archive.repository import DATA_DIR, SNAPSHOT_DIR
from bundlesync.operations import failpoints
from bundlesync.operations.demo import populate
from tests.archive.conftest import CliBackups

EXIT_INTERRUPTED = 130


def _ctrl_c() -> None:
    raise KeyboardInterrupt


def _files(root: Path, sub: str) -> list[Path]:
    return sorted(p for p in (root / sub).rglob("*") if p.is_file())


def test_an_interrupted_backup_says_its_packs_belong_to_no_snapshot(cli: CliBackups) -> None:
    populate(cli.store, per_folder=3)
    with failpoints.acting_at("archive-pack", _ctrl_c):  # a pack written, no index yet
        interrupted = cli.backup()
    assert interrupted.returncode == EXIT_INTERRUPTED, interrupted.stderr
    assert "no snapshot was written" in interrupted.stderr
    assert "'bundlesync prune' removes what no snapshot uses" in interrupted.stderr
    assert "Nothing was changed" not in interrupted.stderr
    assert _files(cli.archive, DATA_DIR)  # the message is about something real
    assert not _files(cli.archive, SNAPSHOT_DIR)
    pruned = cli.run("prune", str(cli.archive))
    assert pruned.returncode == 0, pruned.stderr
    assert not _files(cli.archive, DATA_DIR)


def test_the_next_backup_reuses_what_an_interrupted_one_indexed(
        cli: CliBackups, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(cli.store, per_folder=3)
    monkeypatch.setattr(backup_module, "INDEX_EVERY_PACKS", 1)
    with failpoints.acting_at("archive-index", _ctrl_c):  # the bodies' pack is indexed
        interrupted = cli.run("--json", "backup", str(cli.archive), "--kdf-log-n", "14")
    assert interrupted.returncode == EXIT_INTERRUPTED
    error = json.loads(interrupted.stdout)["error"]
    assert error["code"] == "interrupted"
    assert error["exit_code"] == EXIT_INTERRUPTED
    again = cli.backup("--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)["result"]
    assert result["messages"] > 0
    assert result["bodies_added"] == 0
