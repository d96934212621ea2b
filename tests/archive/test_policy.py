"""forget's retention: restic's rules, checked on named histories (archive-v1 §9)."""

from __future__ import annotations

import datetime as dt

import pytest

from bundlesync.archive.policy import (
    UNLIMITED,
    Candidate,
    Duration,
    Policy,
    apply_policy,
    parse_duration,
)
from bundlesync.errors import UsageError

UTC = dt.UTC


def at(*parts: int) -> int:
    return int(dt.datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def daily_history() -> list[Candidate]:
    """One backup a day at 02:00, 2024-01-01..03-31, none 03-10..03-24, one more 03-31 14:00."""
    result = []
    day = dt.datetime(2024, 1, 1, 2, tzinfo=UTC)
    while day <= dt.datetime(2024, 3, 31, 2, tzinfo=UTC):
        if not dt.datetime(2024, 3, 10, tzinfo=UTC) <= day < dt.datetime(2024, 3, 25, tzinfo=UTC):
            result.append(Candidate(day.strftime("%m-%dT%H"), int(day.timestamp() * 1000)))
        day += dt.timedelta(days=1)
    result.append(Candidate("03-31T14", at(2024, 3, 31, 14)))
    return result


def kept(policy: Policy, history: list[Candidate],
         now: int | None = None) -> dict[str, tuple[str, ...]]:
    decisions = apply_policy(history, policy, tz=UTC, now_ms=now or at(2024, 4, 1))
    return {d.candidate.id: d.reasons for d in decisions if d.keep}


def test_the_reference_history_keeps_what_restic_keeps() -> None:
    # The same history and policy as the backup survey's comparison of four tools.
    result = kept(Policy(daily=7, weekly=4, monthly=3), daily_history())
    assert list(result) == ["03-31T14", "03-30T02", "03-29T02", "03-28T02", "03-27T02",
                            "03-26T02", "03-25T02", "03-09T02", "03-03T02", "02-29T02",
                            "02-25T02", "01-31T02"]
    assert result["03-31T14"] == ("daily snapshot", "weekly snapshot", "monthly snapshot")
    assert "03-31T02" not in result  # superseded by the later one that day


def test_the_oldest_is_kept_while_a_bucket_has_count_left() -> None:
    history = [Candidate("a", at(2024, 1, 1)), Candidate("b", at(2024, 1, 1, 5))]
    assert set(kept(Policy(daily=3), history)) == {"a", "b"}
    assert set(kept(Policy(daily=1), history)) == {"b"}


def test_keep_within_counts_back_from_the_newest_not_from_now() -> None:
    history = [Candidate(str(d), at(2020, 1, d)) for d in range(1, 11)]
    result = kept(Policy(within=parse_duration("3d")), history, now=at(2024, 1, 1))
    assert set(result) == {"8", "9", "10"}


def test_a_snapshot_in_the_future_does_not_anchor_within() -> None:
    history = [Candidate("past", at(2024, 1, 1)), Candidate("future", at(2030, 1, 1))]
    result = kept(Policy(within=parse_duration("1d")), history, now=at(2024, 1, 2))
    assert set(result) == {"past", "future"}


def test_unlimited_and_tags_and_the_newest_always_stays() -> None:
    history = [Candidate(str(h), at(2024, 1, 1, h), ("keep",) if h == 3 else ())
               for h in range(6)]
    assert len(kept(Policy(hourly=UNLIMITED), history)) == 6
    only_tag = kept(Policy(tags=("keep",)), history)
    assert only_tag == {"5": ("newest snapshot",), "3": ("has tag keep",)}


def test_weeks_are_iso_weeks() -> None:
    # 2024-12-30 (Monday) belongs to ISO week 2025-W01, with 2025-01-05 (Sunday).
    history = [Candidate("mon", at(2024, 12, 30)), Candidate("sun", at(2025, 1, 5)),
               Candidate("prev-sun", at(2024, 12, 29))]
    assert set(kept(Policy(weekly=2), history)) == {"sun", "prev-sun"}


def test_within_buckets_keep_one_per_period_inside_the_window() -> None:
    history = [Candidate(f"{d}-{h}", at(2024, 1, d, h)) for d in range(1, 6) for h in (1, 9)]
    result = kept(Policy(within_daily=parse_duration("2d")), history)
    # The window is strictly after newest - 2d: 01-03 09:00 itself is outside it, and
    # 01-04 01:00 is inside but its day already has a kept snapshot.
    assert set(result) == {"5-9", "4-9"}


def test_an_empty_policy_is_refused() -> None:
    with pytest.raises(UsageError, match="No retention rule"):
        apply_policy([Candidate("a", 0)], Policy(), tz=UTC, now_ms=0)


def test_durations() -> None:
    assert parse_duration("1y2m3d4h") == Duration(1, 2, 3, 4)
    # Go's AddDate: 2024-03-31 minus one month is 2024-03-02 (February has no 31st).
    assert Duration(months=1).before(dt.datetime(2024, 3, 31, tzinfo=UTC)) == dt.datetime(
        2024, 3, 2, tzinfo=UTC)
    with pytest.raises(UsageError):
        parse_duration("3 weeks")
