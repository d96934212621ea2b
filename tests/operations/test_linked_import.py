"""An import delivers each spooled body by linking its spool file: written once.

Checked on real sites: the spool's files become the messages' files (the bytes
are not written a second time), two messages never share a file, and a spool
written by the previous version (one file per bundle) is still delivered and
cleared.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.operations import failpoints, importer
from bundlesync.operations.apply import HeldBack
from bundlesync.operations.demo import demo_message
from bundlesync.operations.report import ApplyReport
from bundlesync.operations.site import Site, open_site, site_lock
from bundlesync.state.index import StateIndex
from tests.operations.conftest import Sites

INBOX = ("INBOX",)


def _files(top: Path, parts: tuple[str, ...]) -> Iterator[Path]:
    for directory, _dirs, names in os.walk(top):
        if Path(directory).name in parts:
            for name in names:
                yield Path(directory) / name


def _with_a_list_post(sites: Sites) -> int:
    """alpha with a populated store and one post delivered to two users; the number
    of distinct bodies."""
    alpha = sites.add("alpha", populate_per_folder=2)
    data, when = demo_message("list", 4_242)
    users = alpha.users()
    for user in users[:2]:
        alpha.add_message(user, INBOX, key=f"{when}.M4242P1.list", data=data,
                          flags=frozenset(), internal_date=when)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    bodies = set()
    for user in users:
        for folder in alpha.folders(user):
            for message in alpha.messages(user, folder.path):
                bodies.add(alpha.read_body(user, folder.path, message.key))
    return len(bodies)


def test_a_first_import_links_each_spool_file_into_one_message(sites: Sites) -> None:
    distinct = _with_a_list_post(sites)
    spool = sites.homes["bravo"] / "spool"
    mail = sites.root / "bravo" / "mail"
    linked: set[int] = set()

    def look() -> None:
        # Every batch's messages are in tmp/ now, not yet named.
        spooled = {path.stat().st_ino for path in _files(spool, tuple(os.listdir(spool)))}
        for path in _files(mail, ("tmp",)):
            st = path.stat()
            if st.st_ino in spooled:
                assert st.st_nlink == 2  # the spool's name and this one: no one else's
                linked.add(st.st_ino)

    with failpoints.acting_at("written", look):
        result = sites.import_("bravo")
    assert not result.report.failures
    assert sites.digest("bravo") == sites.digest("alpha")
    # Each body's spool file became one message; the list post's second copy was written.
    assert len(linked) == distinct
    messages = list(_files(mail, ("cur", "new")))
    assert len(messages) == distinct + 1
    inodes = {path.stat().st_ino for path in messages}
    assert len(inodes) == len(messages)  # two messages never share a file
    assert all(path.stat().st_nlink == 1 for path in messages)  # the spool is cleared
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in messages)
    assert list(spool.iterdir()) == []
    bravo = sites.stores["bravo"]
    alpha = sites.stores["alpha"]
    for user in alpha.users():
        for folder in alpha.folders(user):
            dates = {m.key: m.internal_date for m in alpha.messages(user, folder.path)}
            assert {m.key: m.internal_date for m in bravo.messages(user, folder.path)} == dates


def _to_the_old_layout(home: Path) -> None:
    """Rewrite a spool as the previous version wrote it: one file per bundle, each
    body at an offset in it."""
    spool = home / "spool"
    with StateIndex(home / "state.sqlite") as index:
        rows = []
        offset = 0
        with (spool / "1.bodies").open("wb") as out:
            for directory in [p for p in spool.iterdir() if p.is_dir()]:
                for path in sorted(directory.iterdir()):
                    data = path.read_bytes()
                    out.write(data)
                    rows.append((path.name, "1.bodies", offset, len(data)))
                    offset += len(data)
                    path.unlink()
                directory.rmdir()
        with index.transaction():
            index.clear_spooled()
            index.put_spooled_many(rows)
        assert rows


def test_a_spool_the_previous_version_wrote_is_delivered_and_cleared(
        sites: Sites, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_a_list_post(sites)

    def interrupted(site: Site, **kwargs: object) -> ApplyReport:
        del site
        held = kwargs.get("held")
        if isinstance(held, HeldBack):
            held.failed = True  # so the spool is kept
        return ApplyReport()

    # The bundle is taken in and spooled; the apply does not happen (as if the
    # previous version had been stopped there).
    with monkeypatch.context() as patched:
        patched.setattr(importer, "apply_pending", interrupted)
        sites.import_("bravo")
    assert sites.digest("bravo") != sites.digest("alpha")
    _to_the_old_layout(sites.homes["bravo"])
    with site_lock(sites.homes["bravo"]):
        site = open_site(sites.homes["bravo"])
        assert site.index.has_pending()
        site.index.close()
    result = sites.import_("bravo")
    assert not result.report.failures
    assert sites.digest("bravo") == sites.digest("alpha")
    assert list((sites.homes["bravo"] / "spool").iterdir()) == []
    mail = sites.root / "bravo" / "mail"
    messages = list(_files(mail, ("cur", "new")))
    assert len({path.stat().st_ino for path in messages}) == len(messages)
