"""Which bodies an export sends: planned from one join of the change log and the
registers, the same as deciding each logged add on its own, with a few statements."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from bundlesync.core.model import MessageAdded, VersionVector
from bundlesync.operations import bodies as bodies_module
from bundlesync.operations.bodies import BodyFinder
from bundlesync.operations.export import _BundleContent
from bundlesync.operations.ledger import load_message
from bundlesync.operations.scan import scan_store
from bundlesync.operations.site import Site, open_site, site_lock
from bundlesync.state.codec import decode_change
from tests.operations.conftest import Sites, tick

USER = "alice@example.org"


def one_add_at_a_time(site: Site, ack: VersionVector, asked: set[str]) -> list[str]:
    """The plan as the export made it before the join: each uncovered add decoded,
    its register read, and the acknowledgement of its body looked up."""
    index = site.index
    decided: set[str] = set()
    plan = []
    for logged in index.changes_not_covered(ack):
        body = logged.body
        if body is None or body in decided:
            continue
        op = decode_change(logged.record).op
        assert isinstance(op, MessageAdded)
        state = load_message(index, op.message)
        if state is None or not state.alive:
            continue
        decided.add(body)
        if body in asked or not index.body_known_to(body, ack):
            plan.append(body)
    return plan + sorted(asked - decided)


@pytest.fixture
def alpha(sites: Sites) -> Iterator[Site]:
    """A site whose log holds adds of one body twice, an expunged body and an
    expunged copy of a body still alive elsewhere."""
    store = sites.add("alpha", populate_per_folder=5)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    inbox = store.messages(USER, ("INBOX",))
    copied = inbox[0]
    data = store.read_body(USER, ("INBOX",), copied.key)
    for n, folder in enumerate([("INBOX",), ("Sent",)]):
        store.add_message(USER, folder, key=f"1700000000.M{n}P1.copy", data=data,
                          flags=frozenset(), internal_date=1_700_000_000)
    store.expunge(USER, ("INBOX",), inbox[1].key)  # its body goes nowhere
    store.expunge(USER, ("INBOX",), copied.key)  # its copies keep its body alive
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        scan_store(site, now_ms=tick())
        yield site
        site.index.close()


def plan_of(site: Site, ack: VersionVector, asked: set[str]) -> list[str]:
    content = _BundleContent(site, ack, peer="nobody")
    content.asked = asked
    content.plan()
    return content.send


def test_the_joined_plan_is_the_plan_of_one_add_at_a_time(alpha: Site) -> None:
    index = alpha.index
    [stream] = [s for s in index.logged_streams() if s.site == alpha.site_id]
    total = index.stream_max(stream)
    dead = [add.body for add in index.adds_not_covered(VersionVector()) if not add.alive]
    assert len(dead) == 2  # the two expunged instances are among the adds
    for covered in (0, 1, total // 3, total // 2, total):
        ack = VersionVector.of({stream: covered})
        for asked in (set(), {dead[0], "ab" * 32}):
            expected = one_add_at_a_time(alpha, ack, asked)
            assert plan_of(alpha, ack, asked) == expected, (covered, asked)
    everything = plan_of(alpha, VersionVector(), set())
    assert len(everything) == len(set(everything)) > 30
    assert len([b for b in dead if b in everything]) == 1  # only the copied body goes


def test_adds_logged_before_the_guid_column_are_planned_by_their_records(
        alpha: Site) -> None:
    ack = VersionVector()
    expected = one_add_at_a_time(alpha, ack, set())
    # As a log migrated from schema 4 holds them: no message GUID beside the record.
    with sqlite3.connect(alpha.index.path) as db:
        db.execute("UPDATE changes SET guid = NULL")
    adds = list(alpha.index.adds_not_covered(ack))
    assert adds and all(a.guid is None and a.alive is None and a.record for a in adds)
    assert plan_of(alpha, ack, set()) == expected


def test_a_first_plan_runs_a_statement_per_stream_not_per_add(alpha: Site) -> None:
    seen: list[str] = []
    alpha.index.trace(seen.append)
    send = plan_of(alpha, VersionVector(), set())
    alpha.index.trace(None)
    assert len(send) > 30
    assert len(seen) < 12, seen


def test_read_many_looks_up_a_list_of_bodies_per_statement(
        alpha: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodies_module, "PLACES_PER_LOOKUP", 8)
    send = plan_of(alpha, VersionVector(), set())
    seen: list[str] = []
    alpha.index.trace(seen.append)
    got = list(BodyFinder(alpha).read_many(send))
    alpha.index.trace(None)
    assert [body for body, _data in got] == send
    assert all(data is not None for _body, data in got)
    lookups = [s for s in seen if "FROM files" in s]
    assert len(lookups) == -(-len(send) // 8)
    assert all("body IN (" in s for s in lookups)


def test_a_body_held_by_no_file_is_read_from_nowhere(alpha: Site) -> None:
    send = plan_of(alpha, VersionVector(), set())
    gone = "cd" * 32
    got = dict(BodyFinder(alpha).read_many([send[0], gone, send[1]]))
    assert got[gone] is None
    assert got[send[0]] is not None and got[send[1]] is not None


def test_a_body_whose_first_file_went_is_read_from_another(alpha: Site) -> None:
    send = plan_of(alpha, VersionVector(), set())
    places = alpha.index.places_of_bodies(send)
    [copied] = [body for body in send if len(places[body]) == 2]
    user, folder, key, _size = places[copied][0]
    path = next(f.path for f in alpha.index.folders(user) if f.guid == folder)
    alpha.store.expunge(user, path, key)  # the index still names it first
    got = list(BodyFinder(alpha).read_many(send))
    assert [body for body, _data in got] == send
    assert all(data is not None for _body, data in got)
    assert dict(got)[copied] == BodyFinder(alpha).read(copied)


def test_runs_hold_bodies_of_one_folder_within_their_bounds() -> None:
    def at(user: str, folder: str, body: str, size: int = 10) -> bodies_module._Located:
        return body, [(user, (folder,), f"k{body}")], size

    nowhere: bodies_module._Located = ("z", [], 0)
    located = [at("u", "A", "1"), at("u", "A", "2"), at("u", "B", "3"), nowhere, nowhere,
               at("v", "B", "4"), at("v", "B", "5"), at("v", "B", "6"),
               at("v", "B", "7", size=100), at("v", "B", "8")]
    runs = [[body for body, _candidates, _size in run]
            for run in bodies_module._runs(located, longest=2, most_bytes=50)]
    assert runs == [["1", "2"], ["3"], ["z"], ["z"], ["4", "5"], ["6"], ["7"], ["8"]]
