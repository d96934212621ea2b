"""The benchmark harness: byte counting, the copy comparison, an end-to-end tiny run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.compare import compare, inventory
from benchmarks.generate import generate_store
from benchmarks.rsync_driver import parse_stats

RSYNC_STATS = """
Number of files: 654 (reg: 545, dir: 109)
Total file size: 11,766,047 bytes
Literal data: 11,766,047 bytes
Total bytes sent: 11,826,484
Total bytes received: 10,921

sent 11,826,484 bytes  received 10,921 bytes  7,891,603.33 bytes/sec
"""


def test_rsync_byte_totals_are_read_from_stats() -> None:
    assert parse_stats(RSYNC_STATS) == (11_826_484, 10_921)
    with pytest.raises(ValueError, match="no byte totals"):
        parse_stats("sent 1 bytes  received 2 bytes")


def test_comparison_finds_a_changed_flag_and_a_lost_message(tmp_path: Path) -> None:
    src = tmp_path / "src"
    generate_store(src, users=2, folders=3, messages=5, seed=4, quiet=True)
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert compare(inventory(src), inventory(copy)).total == 0

    cur = next(copy.glob("*/*/Maildir/.Sent/cur"))
    first, second = sorted(os.listdir(cur))[:2]
    os.unlink(cur / first)
    base, _, letters = second.partition(":2,")
    os.rename(cur / second, cur / f"{base}:2,{'' if 'S' in letters else 'S'}")
    # A rename of the file alone (dsync writes its own names) is no difference.
    third = sorted(os.listdir(cur))[-1]
    os.rename(cur / third, cur / third.replace(".M", ".Mx", 1))

    mismatch = compare(inventory(src), inventory(copy))
    assert (mismatch.missing, mismatch.extra) == (2, 1)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_tiny_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    run.main(["--size", "tiny", "--only", "rsync,bundlesync", "--bundlesync", "false",
              "--runs", "1", "--nochange-runs", "1", "--json", "--quiet",
              "--workdir", str(work)])
    report = json.loads(capsys.readouterr().out)
    messages = 5 * 5 * 20
    assert report["store"]["messages"] == messages
    assert report["correctness"]["rsync -a"] == {"messages": messages, "missing": 0, "extra": 0}
    assert report["correctness"]["rsync delta mode"]["missing"] == 0
    first = report["summary"]["first"]["rsync"]
    assert first["seconds"]["n"] == 1
    assert first["bytes"]["median"] >= report["store"]["bytes"]
    assert len(report["rounds"]) == 1
    # A bundlesync command that fails is left out with the reason, not a crash.
    assert "setting up two sites failed" in report["skipped"]["bundlesync"]
    assert not work.exists()  # removed without --keep
