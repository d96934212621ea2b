"""Hybrid logical clocks: physical milliseconds, a logical counter, the site.

Every change is stamped with a :class:`~bundlesync.core.model.Timestamp` taken
from the site's :class:`HybridClock`. The clock never reads the time itself:
the caller passes ``now_ms`` (the core does no I/O).

Why hybrid: last-writer-wins rules compare timestamps made on machines that
may be offline for weeks. A plain wall clock lets a site whose clock is a day
ahead win every conflict for a day, and one that is behind lose every
conflict. A hybrid clock *observes* every timestamp it imports, so the next
local change is later than everything the site has seen: a site with a wrong
clock cannot freeze others' changes out once they have seen its changes.

Bound on the future: a timestamp more than :data:`MAX_AHEAD_MS` (one hour)
ahead of the local clock is still observed -- refusing it would freeze the
local site's changes out instead -- but :meth:`HybridClock.observe` returns a
:class:`ClockSkew` so that the operation can warn the administrator that some
site's clock is wrong. Ordering stays correct whatever the skew; only the
wall-clock part of later timestamps is then meaningless until real time
catches up.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundlesync.core.model import Timestamp
from bundlesync.core.state import inventory_timestamp

__all__ = ["MAX_AHEAD_MS", "ClockSkew", "HybridClock"]

#: How far ahead of the local clock a remote timestamp may be before it is reported.
MAX_AHEAD_MS = 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """A remote timestamp was far ahead of the local clock: some clock is wrong."""

    site: str  # the site that made the timestamp
    ahead_ms: int  # how far ahead of our ``now_ms`` it was

    def describe(self) -> str:
        hours = self.ahead_ms / 3_600_000
        return (
            f"site {self.site} stamped a change {hours:.1f} h ahead of this machine's clock; "
            "check both clocks"
        )


class HybridClock:
    """The clock of one site. Not thread-safe; one per site and run.

    ``last`` is the newest timestamp the site has issued or observed (persist it
    with the state and pass it back on the next run). Without it the clock starts
    just above the site's inventory timestamp, so every tick is later than any
    inventory (design rule 9).
    """

    __slots__ = ("_last", "_max_ahead_ms", "site")

    def __init__(
        self, site: str, last: Timestamp | None = None, *, max_ahead_ms: int = MAX_AHEAD_MS
    ) -> None:
        self.site = site
        self._last = last if last is not None else inventory_timestamp(site)
        self._max_ahead_ms = max_ahead_ms

    @property
    def last(self) -> Timestamp:
        """The newest timestamp issued or observed (what to persist)."""
        return self._last

    def tick(self, now_ms: int) -> Timestamp:
        """A new timestamp for a local change, later than every one issued or observed."""
        if now_ms > self._last.wall_ms:
            ts = Timestamp(now_ms, 0, self.site)
        else:
            ts = Timestamp(self._last.wall_ms, self._last.counter + 1, self.site)
        self._last = ts
        return ts

    def observe(self, ts: Timestamp, now_ms: int) -> ClockSkew | None:
        """Take a remote timestamp into account, so the next tick is later than it.

        Returns a :class:`ClockSkew` if ``ts`` is more than ``max_ahead_ms`` ahead
        of ``now_ms``; the timestamp is observed all the same.
        """
        if (ts.wall_ms, ts.counter) > (self._last.wall_ms, self._last.counter):
            # Keep our own site in `last`: the next tick continues from the
            # remote (wall, counter), and (wall, counter + 1, us) > ts whatever
            # the site ids are.
            self._last = Timestamp(ts.wall_ms, ts.counter, self.site)
        ahead = ts.wall_ms - now_ms
        if ahead > self._max_ahead_ms:
            return ClockSkew(site=ts.site, ahead_ms=ahead)
        return None
