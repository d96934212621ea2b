"""Dots, version vectors and acknowledgements: what to send, what was applied.

Every change has a :class:`~bundlesync.core.model.Dot` ``(site, incarnation,
counter)``: counters of one *stream* (one incarnation of one site) run 1, 2, 3,
... without gaps. Bundles are lost, duplicated and reordered on the way, and
changes are forwarded through relays keeping their origin dots, so a site may
hold a stream's changes with gaps: a :class:`DotSet` records exactly which dots
it has applied, and its :meth:`DotSet.vector` -- the contiguous prefix per
stream -- is what the site acknowledges in every bundle it writes.

Export rule: a bundle to a peer carries every change the exporter holds that
the peer's latest acknowledgement does not cover (:func:`changes_to_send`).
A lost bundle is therefore healed by the next one, and a duplicate or stale
bundle is harmless because applying a change twice is a no-op. Honour the
acknowledgement of the most recently *received* bundle from a peer, replacing
the previous one rather than merging the two: after the peer is restored from
an old copy its acknowledgement goes down, and it must be sent again what it
lost.

Restores (design §3.1, "no reuse after restore"): if a site's state is
restored from an old copy, its counters must never be reused, or two
different changes would carry one dot and peers would drop one as a
duplicate. See :func:`detect_restore`, :func:`reincarnate` and
``docs/conflict-rules.md`` ("Restored sites") for the procedure and its limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from bundlesync.core.model import Change, Dot, Stream, VersionVector

__all__ = [
    "DotSet",
    "Intake",
    "Reincarnation",
    "changes_to_send",
    "covers",
    "detect_restore",
    "merge_vectors",
    "next_incarnation",
    "reemit",
    "reincarnate",
    "sort_incoming",
]

@dataclass(frozen=True, slots=True)
class DotSet:
    """An immutable set of dots, stored per stream as a contiguous base plus extras.

    ``entries`` holds ``(stream, base, extras)``: every counter ``1..base`` is in
    the set, and so is every counter in ``extras`` (sorted, all above ``base + 1``).
    The representation is canonical, so two DotSets are equal exactly when they
    hold the same dots.
    """

    entries: tuple[tuple[Stream, int, tuple[int, ...]], ...] = ()
    _index: dict[Stream, tuple[int, frozenset[int]]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[Stream, tuple[int, frozenset[int]]] = {}
        for stream, base, extras in self.entries:
            old_base, old_extra = index.get(stream, (0, frozenset()))
            index[stream] = _normalise(max(base, old_base), old_extra | frozenset(extras))
        canonical = tuple(
            (stream, base, tuple(sorted(extra)))
            for stream, (base, extra) in sorted(index.items())
            if base > 0 or extra
        )
        object.__setattr__(self, "entries", canonical)
        object.__setattr__(self, "_index", {s: (b, frozenset(e)) for s, b, e in canonical})

    # construction ---------------------------------------------------------------
    @classmethod
    def of(cls, dots: Iterable[Dot]) -> DotSet:
        """The set holding exactly ``dots``."""
        per: dict[Stream, set[int]] = {}
        for dot in dots:
            if dot.counter < 1:
                raise ValueError(f"dot counters start at 1: {dot}")
            per.setdefault(dot.stream, set()).add(dot.counter)
        return cls(tuple((stream, 0, tuple(counters)) for stream, counters in per.items()))

    @classmethod
    def from_vector(cls, vector: Mapping[Stream, int]) -> DotSet:
        """The set of every dot a version vector covers."""
        return cls(tuple((stream, n, ()) for stream, n in vector.items()))

    def add(self, *dots: Dot) -> DotSet:
        """This set with ``dots`` added."""
        return self.merge(DotSet.of(dots))

    def merge(self, other: DotSet) -> DotSet:
        """The union of two sets (commutative, associative, idempotent)."""
        return DotSet(self.entries + other.entries)

    def forget_above(self, stream: Stream, counter: int) -> DotSet:
        """This set without the dots of ``stream`` above ``counter``."""
        kept = []
        for s, base, extras in self.entries:
            if s == stream:
                kept.append((s, min(base, counter), tuple(c for c in extras if c <= counter)))
            else:
                kept.append((s, base, extras))
        return DotSet(tuple(kept))

    # queries ---------------------------------------------------------------------
    def __contains__(self, dot: object) -> bool:
        if not isinstance(dot, Dot):
            return False
        base, extra = self._index.get(dot.stream, (0, frozenset()))
        return 1 <= dot.counter <= base or dot.counter in extra

    def __iter__(self) -> Iterator[Dot]:
        for stream, base, extras in self.entries:
            for counter in range(1, base + 1):
                yield Dot(stream.site, stream.incarnation, counter)
            for counter in extras:
                yield Dot(stream.site, stream.incarnation, counter)

    def __len__(self) -> int:
        return sum(base + len(extras) for _, base, extras in self.entries)

    def streams(self) -> list[Stream]:
        """The streams with at least one dot, sorted."""
        return [stream for stream, _, _ in self.entries]

    def contiguous(self, stream: Stream) -> int:
        """The highest ``n`` such that ``1..n`` of ``stream`` are all held."""
        return self._index.get(stream, (0, frozenset()))[0]

    def max_counter(self, stream: Stream) -> int:
        """The highest counter of ``stream`` held (0 if none)."""
        base, extra = self._index.get(stream, (0, frozenset()))
        return max(extra, default=base)

    def vector(self) -> VersionVector:
        """The contiguous prefix per stream: what this site acknowledges."""
        return VersionVector(tuple((stream, base) for stream, base, _ in self.entries))


def _normalise(base: int, extra: frozenset[int]) -> tuple[int, frozenset[int]]:
    while base + 1 in extra:
        base += 1
    return base, frozenset(c for c in extra if c > base)


def covers(ack: VersionVector | DotSet, dot: Dot) -> bool:
    """Whether an acknowledgement says the peer holds ``dot``."""
    if isinstance(ack, DotSet):
        return dot in ack
    return ack.covers(dot)


def merge_vectors(a: Mapping[Stream, int], b: Mapping[Stream, int]) -> VersionVector:
    """The pointwise maximum of two version vectors."""
    merged = dict(a)
    for stream, n in b.items():
        merged[stream] = max(merged.get(stream, 0), n)
    return VersionVector.of(merged)


def changes_to_send(changes: Iterable[Change], ack: VersionVector | DotSet) -> list[Change]:
    """What an export to a peer carries: every held change the peer's latest
    acknowledgement does not cover, in dot order. Changes of third sites keep
    their origin dots, so a relay forwards them unchanged."""
    return sorted((c for c in changes if not covers(ack, c.dot)), key=lambda c: c.dot)


# --- restores -----------------------------------------------------------------------


def _evidence_streams(evidence: VersionVector | DotSet) -> Iterable[tuple[Stream, int]]:
    if isinstance(evidence, DotSet):
        return ((s, evidence.max_counter(s)) for s in evidence.streams())
    return evidence.items()


def detect_restore(our: Stream, our_counter: int, peer_ack: VersionVector | DotSet) -> bool:
    """Whether ``peer_ack`` proves that this site's state is older than changes it made.

    True if it holds more of our current stream than we remember making
    (``our_counter`` is the last counter we issued), or any later incarnation of
    our site. Pass a peer's acknowledgement, a DotSet of the dots of incoming
    changes, or the high-water mark the site keeps outside its state.
    """
    for stream, n in _evidence_streams(peer_ack):
        if stream.site != our.site:
            continue
        if stream.incarnation > our.incarnation:
            return True
        if stream.incarnation == our.incarnation and n > our_counter:
            return True
    return False


def next_incarnation(
    our: Stream, evidence: Iterable[VersionVector | DotSet] = (), *, floor: int = 0
) -> Stream:
    """A stream of our site that no copy of this site can have used yet.

    Above our own incarnation and every incarnation of our site in ``evidence``,
    and at least ``floor``. Pass the current time in seconds as ``floor``: then
    two restores from the same old copy, each without evidence of the other,
    still pick different incarnations.
    """
    highest = max(our.incarnation, floor - 1)
    for item in evidence:
        for stream, _ in _evidence_streams(item):
            if stream.site == our.site:
                highest = max(highest, stream.incarnation)
    return Stream(our.site, highest + 1)


def reemit(changes: Iterable[Change], stream: Stream, first_counter: int) -> list[Change]:
    """The same changes (same timestamps, same operations) under new dots of
    ``stream``, numbered from ``first_counter`` in the order given.

    Where a change is already applied, its re-emitted copy is a no-op: the
    registers are joined by timestamp and value, never by dot.
    """
    return [
        replace(change, dot=Dot(stream.site, stream.incarnation, counter))
        for counter, change in enumerate(changes, start=first_counter)
    ]


@dataclass(frozen=True, slots=True)
class Reincarnation:
    """What a site does once it knows its state was restored from an old copy.

    * continue with ``stream`` (counter ``len(reemitted)``);
    * add ``reemitted`` to the change log and the applied dots;
    * drop the old stream's dots above ``keep_through`` from the change log and
      the applied dots, so that peers send back the versions they hold.
    """

    stream: Stream
    reemitted: tuple[Change, ...]
    old_stream: Stream
    keep_through: int


def reincarnate(
    *,
    stream: Stream,
    own_changes: Iterable[Change],
    keep_through: int,
    evidence: Iterable[VersionVector | DotSet] = (),
    floor: int = 0,
) -> Reincarnation:
    """Move to a new incarnation after a restore was detected.

    ``own_changes`` are the changes of ``stream`` in the log. Those with counters
    above ``keep_through`` may collide with different changes peers hold under
    the same dots, so they are re-emitted under the new incarnation. When the
    restore is detected before any new change was made (the normal case: the
    high-water mark kept outside the state tells at start-up), pass the
    restored counter: nothing is re-emitted.
    """
    new = next_incarnation(stream, evidence, floor=floor)
    doubtful = sorted(
        (c for c in own_changes if c.dot.stream == stream and c.dot.counter > keep_through),
        key=lambda c: c.dot,
    )
    return Reincarnation(
        stream=new,
        reemitted=tuple(reemit(doubtful, new, 1)),
        old_stream=stream,
        keep_through=keep_through,
    )


# --- intake -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Intake:
    """Incoming changes sorted against what a site holds.

    ``new``: dots not held yet (apply and record them). ``duplicates``: how many
    were already held with the same content. ``forks``: pairs ``(held,
    incoming)`` with one dot and different content -- proof that the dot's site
    reused a counter after a restore. Apply the incoming change anyway (the
    join ignores dots, so nothing is lost here) and re-emit both under the local
    stream with :func:`reemit`, so that every site gets both -- each content
    only if it is not already held under another dot (same timestamp and
    operation), so that a fork seen twice is repaired once.
    """

    new: tuple[Change, ...]
    duplicates: int
    forks: tuple[tuple[Change, Change], ...]


def sort_incoming(
    changes: Iterable[Change], *, held: Callable[[Dot], Change | None]
) -> Intake:
    """Classify incoming changes; ``held(dot)`` returns the change held under a dot."""
    new: dict[Dot, Change] = {}
    duplicates = 0
    forks: list[tuple[Change, Change]] = []
    for change in changes:
        known = new.get(change.dot) or held(change.dot)
        if known is None:
            new[change.dot] = change
        elif known == change:
            duplicates += 1
        else:
            forks.append((known, change))
    return Intake(new=tuple(sorted(new.values(), key=lambda c: c.dot)), duplicates=duplicates,
                  forks=tuple(forks))
