"""The benchmark harness: byte counting, the copy comparison, an end-to-end tiny run."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run
from benchmarks.compare import compare, inventory
from benchmarks.dsync_driver import closed_parent, dsync_available
from benchmarks.generate import generate_store
from benchmarks.report import Results, render_markdown
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


def run_results(report: dict[str, Any]) -> Results:
    """The report's header fields back as Results (the figures are not needed)."""
    return Results(size=report["size"], config=report["config"], machine=report["machine"],
                   store=report["store"], command=report["command"], date=report["date"],
                   run_seconds=report["run_seconds"])


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_tiny_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    run.main(["--size", "tiny", "--messages", "8", "--only", "rsync,bundlesync",
              "--bundlesync", "false", "--runs", "2", "--first-runs", "1", "--nochange-runs", "1",
              "--json", "--quiet", "--workdir", str(work)])
    report = json.loads(capsys.readouterr().out)
    messages = 5 * 5 * 8
    # The report says how it was made, without this machine's paths.
    assert report["command"] == ("python -m benchmarks.run --size tiny --messages 8 --only "
                                 "rsync,bundlesync --bundlesync false --runs 2 --first-runs 1 "
                                 "--nochange-runs 1 --json --quiet --workdir DIR")
    assert report["date"].endswith(" UTC")
    assert report["machine"]["source revision"]
    header = render_markdown(run_results(report)).splitlines()
    assert header[2].startswith(f"Command: `{report['command']}`; run {report['date']}, for ")
    assert report["run_seconds"] > 0
    assert header[4].startswith("Runs: 1 for first transfers, 2 for 1 % rounds, 1 for no-change")
    assert report["store"]["messages"] == messages
    after = report["correctness"]["source"]["messages"]  # the rounds deliver new mail
    assert after >= messages
    assert report["correctness"]["rsync -a"] == {"messages": after, "missing": 0, "extra": 0}
    assert report["correctness"]["rsync delta mode"]["missing"] == 0
    first = report["summary"]["first"]["rsync"]
    assert first["seconds"]["n"] == 1
    assert first["bytes"]["median"] >= report["store"]["bytes"]
    assert len(report["rounds"]) == 2
    # A bundlesync command that fails is left out with the reason, not a crash.
    assert "setting up two sites failed" in report["skipped"]["bundlesync"]
    assert not work.exists()  # removed without --keep


@pytest.mark.slow
def test_one_big_mailbox_end_to_end_with_bundlesync(capsys: pytest.CaptureFixture[str]) -> None:
    # onebig (one user, one folder) at 40 messages instead of 100,000; every tool
    # that is installed, each copy checked against the source. The default work
    # directory (under the system temp dir, made 0755) is one vmail can traverse,
    # which pytest's tmp_path (0700) is not.
    assert run.main(["--size", "onebig", "--messages", "40", "--runs", "1",
                     "--nochange-runs", "1", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["users"] == report["config"]["folders"] == 1
    assert report["store"]["messages"] == 40
    assert "bundlesync" not in report["skipped"]
    copies = report["correctness"]
    assert copies["bundlesync"]["messages"] == copies["source"]["messages"]
    for name, result in copies.items():
        if name != "source":
            assert (name, result["missing"], result["extra"]) == (name, 0, 0)
    assert report["source_changed_by_bundlesync"] == 0
    for case in ("first", "nochange", "change"):
        assert report["summary"][case]["bundlesync"]["peak_rss_kb"] < 200 * 1024


@pytest.mark.skipif(dsync_available() is not None, reason="needs doveadm, root and vmail")
def test_dsync_is_left_out_with_the_reason_behind_a_closed_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    assert closed_parent(closed / "work") == closed
    assert closed_parent(Path(tempfile.gettempdir()) / "work") is None
    # Not an empty copy counted as "every message missing": the reason, up front.
    run.main(["--size", "tiny", "--messages", "2", "--only", "dsync", "--runs", "1",
              "--nochange-runs", "1", "--json", "--quiet", "--workdir", str(closed / "work")])
    report = json.loads(capsys.readouterr().out)
    why = report["skipped"]["dsync"]
    assert why.startswith(f"{closed} is closed to the vmail user (mode 0700)")
