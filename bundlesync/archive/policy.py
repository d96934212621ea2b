"""Which snapshots ``forget`` keeps: restic's ``forget`` semantics, exactly (archive-v1 §9).

Pure: snapshots (time, id, tags) and a policy in, kept and removed with reasons
out. Calendar buckets are in the local time zone given (``tz``), weeks are ISO
weeks, and only periods that hold a snapshot count. Every rule is applied to every
snapshot independently (the rules are ORed and overlap), and a bucket with count
left also keeps the oldest snapshot. On top of restic: the newest snapshot is
always kept, whatever the policy.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bundlesync.errors import UsageError

UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class Duration:
    """restic's duration: years, months, days and hours (``1y2m3d4h``)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def before(self, moment: dt.datetime) -> dt.datetime:
        """``moment`` minus this duration, with calendar months and years (Go AddDate)."""
        month_index = moment.year * 12 + (moment.month - 1) - self.years * 12 - self.months
        year, month = divmod(month_index, 12)
        # Go's AddDate normalises an overflowing day (Mar 31 - 1 month = Mar 3).
        base = dt.datetime(year, month + 1, 1, moment.hour, moment.minute, moment.second,
                           moment.microsecond, tzinfo=moment.tzinfo)
        shifted = base + dt.timedelta(days=moment.day - 1 - self.days)
        return shifted - dt.timedelta(hours=self.hours)

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{u}" for n, u in parts if n) or "0h"


_DURATION = re.compile(r"(\d+)([ymdh])")


def parse_duration(text: str) -> Duration:
    """``2d``, ``1y6m``, ``36h``; refuses anything else."""
    cleaned = text.strip()
    if not cleaned or _DURATION.sub("", cleaned):
        raise UsageError(f"{text!r} is not a duration.",
                         hint="Write it as numbers with units y, m, d, h, e.g. 7d or 1y6m.")
    values = {"y": 0, "m": 0, "d": 0, "h": 0}
    for number, unit in _DURATION.findall(cleaned):
        values[unit] += int(number)
    return Duration(values["y"], values["m"], values["d"], values["h"])


@dataclass(frozen=True, slots=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration = field(default_factory=Duration)
    within_hourly: Duration = field(default_factory=Duration)
    within_daily: Duration = field(default_factory=Duration)
    within_weekly: Duration = field(default_factory=Duration)
    within_monthly: Duration = field(default_factory=Duration)
    within_yearly: Duration = field(default_factory=Duration)
    tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        withins = (self.within, self.within_hourly, self.within_daily, self.within_weekly,
                   self.within_monthly, self.within_yearly)
        return not any(counts) and all(w.zero for w in withins) and not self.tags


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    time_ms: int
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    candidate: Candidate
    keep: bool
    reasons: tuple[str, ...]


Bucker = Callable[[dt.datetime, int], int]


def _always(_t: dt.datetime, nr: int) -> int:
    return nr


def _ymdh(t: dt.datetime, _nr: int) -> int:
    return ((t.year * 100 + t.month) * 100 + t.day) * 100 + t.hour


def _ymd(t: dt.datetime, _nr: int) -> int:
    return (t.year * 100 + t.month) * 100 + t.day


def _yw(t: dt.datetime, _nr: int) -> int:
    year, week, _ = t.isocalendar()
    return year * 100 + week


def _ym(t: dt.datetime, _nr: int) -> int:
    return t.year * 100 + t.month


def _y(t: dt.datetime, _nr: int) -> int:
    return t.year


def apply_policy(snapshots: Sequence[Candidate], policy: Policy, *, tz: dt.tzinfo,
                 now_ms: int) -> list[Decision]:
    """Decide every snapshot of one group, newest first. Refuses an empty policy."""
    if policy.empty:
        raise UsageError("No retention rule was given: forget would keep everything.",
                         hint="Give at least one --keep-* option, e.g. --keep-daily 7.")
    ordered = sorted(snapshots, key=lambda c: (c.time_ms, c.id), reverse=True)
    if not ordered:
        return []
    times = [dt.datetime.fromtimestamp(c.time_ms / 1000, tz) for c in ordered]
    # The newest snapshot not in the future anchors --keep-within (restic).
    not_future = [t for c, t in zip(ordered, times, strict=True) if c.time_ms <= now_ms]
    latest = max(not_future) if not_future else times[0]
    buckets: list[list[object]] = [
        [policy.last, _always, None, "last snapshot"],
        [policy.hourly, _ymdh, None, "hourly snapshot"],
        [policy.daily, _ymd, None, "daily snapshot"],
        [policy.weekly, _yw, None, "weekly snapshot"],
        [policy.monthly, _ym, None, "monthly snapshot"],
        [policy.yearly, _y, None, "yearly snapshot"],
    ]
    within_buckets: list[list[object]] = [
        [policy.within_hourly, _ymdh, None, "hourly within"],
        [policy.within_daily, _ymd, None, "daily within"],
        [policy.within_weekly, _yw, None, "weekly within"],
        [policy.within_monthly, _ym, None, "monthly within"],
        [policy.within_yearly, _y, None, "yearly within"],
    ]
    decisions = []
    last_nr = len(ordered) - 1
    for nr, (cand, moment) in enumerate(zip(ordered, times, strict=True)):
        reasons: list[str] = []
        reasons += [f"has tag {t}" for t in policy.tags if t in cand.tags]
        if not policy.within.zero and moment > policy.within.before(latest):
            reasons.append(f"within {policy.within}")
        for bucket in buckets:
            count, bucker, last, reason = bucket
            assert isinstance(count, int) and callable(bucker)
            if count > 0 or count == UNLIMITED:
                value = bucker(moment, nr)
                if value != last or nr == last_nr:
                    bucket[2] = value
                    if count > 0:
                        bucket[0] = count - 1
                    reasons.append(str(reason))
        for bucket in within_buckets:
            within, bucker, last, reason = bucket
            assert isinstance(within, Duration) and callable(bucker)
            if not within.zero and moment > within.before(latest):
                value = bucker(moment, nr)
                if value != last:
                    bucket[2] = value
                    reasons.append(f"{reason} {within}")
        if nr == 0 and not reasons:
            reasons.append("newest snapshot")
        decisions.append(Decision(cand, bool(reasons), tuple(reasons)))
    return decisions
