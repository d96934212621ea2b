"""The scaling check: per-message cost, its ratio to the smallest count, the targets."""

from __future__ import annotations

import json

import pytest

from benchmarks import scaling
from benchmarks.scaling import PHASES, Point, render, verdicts

HEADER = ["Command: `python -m benchmarks.scaling`"]


def _point(messages: int, seconds_per_message: float, rss_mib: int = 40) -> Point:
    point = Point(messages)
    for phase in PHASES:
        point.seconds[phase] = messages * seconds_per_message
        point.cpu_seconds[phase] = messages * seconds_per_message / 2
        point.max_rss_kb[phase] = rss_mib * 1024
    return point


def test_a_linear_tool_shows_ratio_one_and_a_quadratic_one_grows() -> None:
    linear = render([_point(10_000, 1e-4), _point(30_000, 1e-4)], HEADER)
    assert linear.startswith(HEADER[0])
    assert "| 30,000 | import | 3.00 | 1.50 | 100 | 50 | 1.00x | 1.00x | 40 MiB |" in linear
    # Cost per message three times higher at three times the size: quadratic.
    quadratic = render([_point(10_000, 1e-4), _point(30_000, 3e-4)], HEADER)
    assert "| 30,000 | export | 9.00 | 4.50 | 300 | 150 | 3.00x | 3.00x | 40 MiB |" in quadratic


def test_targets_are_judged_at_the_largest_count_against_the_smallest() -> None:
    points = [_point(10_000, 1e-4), _point(30_000, 1.2e-4), _point(100_000, 1.6e-4)]
    by_target = {v.target.split(":")[0]: v for v in verdicts(points)}
    assert not by_target["export"].met  # 1.6x at 100,000
    assert "100 → 160 µs: 1.60x" in by_target["export"].measured
    assert "nochange-export" not in by_target  # fixed work: no per-message target
    assert by_target["peak RSS ≤ 200 MB at every count and step"].met
    assert "| export: per-message cost at 100,000 within 1.5x of 10,000 |" in render(points,
                                                                                     HEADER)
    within = verdicts([_point(10_000, 1e-4), _point(100_000, 1.5e-4, rss_mib=190)])
    assert all(v.met for v in within)
    too_big = verdicts([_point(10_000, 1e-4), _point(100_000, 1e-4, rss_mib=191)])
    assert all(v.met for v in too_big[:-1])
    assert not too_big[-1].met and "191 MiB" in too_big[-1].measured  # 200.3 MB


@pytest.mark.slow
def test_a_small_count_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    # One count keeps this quick; the ratios and verdicts are checked above.
    assert scaling.main(["--counts", "20", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["command"] == "python -m benchmarks.scaling --counts 20 --json --quiet"
    assert report["machine"]["source revision"]
    (point,) = report["points"]
    assert point["messages"] == 20 and point["store_bytes"] > 0
    assert set(point["seconds"]) == set(PHASES)
    assert all(s > 0 for s in point["seconds"].values())
    assert all(s > 0 for s in point["cpu_seconds"].values())
    assert all(0 < kb < 200 * 1024 for kb in point["max_rss_kb"].values())
    assert [t["target"] for t in report["targets"]] == [
        "peak RSS ≤ 200 MB at every count and step"]
    assert report["targets"][0]["met"]


def test_bad_counts_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        scaling.main(["--counts", "10,x"])
    assert exc.value.code == 2
    assert "--counts takes positive whole numbers" in capsys.readouterr().err
