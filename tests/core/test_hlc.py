"""Hybrid logical clocks."""

from __future__ import annotations

from bundlesync.core.hlc import MAX_AHEAD_MS, ClockSkew, HybridClock
from bundlesync.core.model import Timestamp
from bundlesync.core.state import inventory_timestamp


def test_ticks_are_strictly_increasing_even_when_the_clock_goes_back() -> None:
    clock = HybridClock("a")
    stamps = [clock.tick(now) for now in (5000, 5000, 4000, 6000, 1)]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    assert stamps[1] == Timestamp(5000, 1, "a")
    assert stamps[2] == Timestamp(5000, 2, "a")


def test_every_tick_is_later_than_any_inventory() -> None:
    clock = HybridClock("a")
    first = clock.tick(0)
    assert first > inventory_timestamp("a")
    assert first > inventory_timestamp("zzzz")


def test_the_clock_resumes_from_the_persisted_last_timestamp() -> None:
    clock = HybridClock("a", Timestamp(9000, 4, "a"))
    assert clock.tick(100) == Timestamp(9000, 5, "a")
    assert clock.last == Timestamp(9000, 5, "a")


def test_after_observing_a_remote_stamp_the_next_tick_is_later() -> None:
    clock = HybridClock("a")
    remote = Timestamp(10_000, 7, "zz")  # a site id that sorts after ours
    assert clock.observe(remote, 9_000) is None
    assert clock.tick(9_000) > remote
    assert clock.tick(20_000) == Timestamp(20_000, 0, "a")


def test_a_site_with_a_fast_clock_cannot_freeze_others_out() -> None:
    # Site "fast" is a day ahead; "slow" observes its change and then makes its
    # own: the later (causally) change wins the last-writer-wins comparison.
    day = 86_400_000
    fast, slow = HybridClock("fast"), HybridClock("slow")
    theirs = fast.tick(1_000_000 + day)
    warning = slow.observe(theirs, 1_000_000)
    ours = slow.tick(1_000_500)
    assert ours > theirs
    assert warning == ClockSkew(site="fast", ahead_ms=day)
    assert "fast" in warning.describe()


def test_skew_within_the_bound_is_not_reported() -> None:
    clock = HybridClock("a")
    assert clock.observe(Timestamp(1000 + MAX_AHEAD_MS, 0, "b"), 1000) is None
    assert clock.observe(Timestamp(1001 + MAX_AHEAD_MS, 0, "b"), 1000) is not None


def test_observing_an_older_stamp_changes_nothing() -> None:
    clock = HybridClock("a", Timestamp(5000, 0, "a"))
    clock.observe(Timestamp(10, 0, "b"), 5000)
    assert clock.last == Timestamp(5000, 0, "a")
