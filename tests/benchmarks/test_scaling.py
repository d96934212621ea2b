"""The scaling report: per-message cost and its ratio to the smallest count."""

from __future__ import annotations

from benchmarks.scaling import PHASES, Point, render


def _point(messages: int, seconds_per_message: float) -> Point:
    point = Point(messages)
    for phase in PHASES:
        point.seconds[phase] = messages * seconds_per_message
        point.max_rss_kb[phase] = 40 * 1024
    return point


def test_a_linear_tool_shows_ratio_one_and_a_quadratic_one_grows() -> None:
    linear = render([_point(10_000, 1e-4), _point(30_000, 1e-4)], {"cpus": "2"})
    assert "| 30,000 | import | 3.00 | 100 | 1.00x | 40 MiB |" in linear
    # Cost per message three times higher at three times the size: quadratic.
    quadratic = render([_point(10_000, 1e-4), _point(30_000, 3e-4)], {"cpus": "2"})
    assert "| 30,000 | export | 9.00 | 300 | 3.00x | 40 MiB |" in quadratic
