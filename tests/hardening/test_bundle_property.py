"""Any bundle a trusted peer can sign -- random records within the format -- leaves
every store path inside its Maildir and never raises an internal error.

Profiles: ``ci`` (default, derandomized, a few examples: each one is two real
sites and a real export and import), ``long`` on demand:
``HYPOTHESIS_PROFILE=long python3 -m pytest tests/hardening/test_bundle_property.py``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundlesync.core.model import (
    FlagsChanged,
    MailboxCreated,
    MailboxDeleted,
    MailboxRef,
    MailboxRenamed,
    MessageExpunged,
    MessageRef,
    Operation,
    SubscriptionSet,
)
from bundlesync.errors import BundlesyncError
from bundlesync.operations.demo import demo_message
from tests.hardening.helpers import add_instance, inject
from tests.operations.conftest import Sites

settings.register_profile("hardening-ci", max_examples=8, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("hardening-long", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# Named apart from the stateful test's profiles (the registry is global).
PROFILE = "hardening-" + os.environ.get("HYPOTHESIS_PROFILE", "ci")

USERS = st.sampled_from(["alice@example.org", "../evil", "a/b@example.org", ".hidden",
                         "x" * 300, "", "bob@example.org", "..", "c@d/../../e"])
NAMES = st.sampled_from(["..", ".", "a.b", "/", "a/../b", "INBOX", "Inbox", "x" * 250,
                         "\u00fc" * 120, "\0", "\n", "Sent", "&AOQ-", "~", ""]) | st.text(
                             max_size=40)
GUIDS = st.integers(1, 6).map(lambda n: f"{n:032x}")
KEYWORDS = st.sampled_from(["\\Seen", "\\Bogus", "\u00dcn\u00ef", "a b", "(x)", "Work",
                            "$Label1", "x" * 300, ""]) | st.text(max_size=20)
MESSAGE_GUIDS = st.sampled_from(["m1", "../../etc/passwd", "a:2,S", ".hidden", "x" * 300,
                                 "a/b", ""]) | st.text(max_size=20)
DATA, _WHEN = demo_message("alice@example.org", 1)


@st.composite
def operations(draw: st.DrawFn) -> list[Operation]:
    ops: list[Operation] = []
    for _ in range(draw(st.integers(1, 12))):
        user = draw(USERS)
        mailbox = MailboxRef(user, draw(GUIDS))
        kind = draw(st.integers(0, 6))
        if kind == 0:
            ops.append(MailboxCreated(mailbox, draw(st.none() | GUIDS), draw(NAMES),
                                      draw(st.integers(1, 2**32 - 1))))
        elif kind == 1:
            ops.append(MailboxRenamed(mailbox, draw(st.none() | GUIDS), draw(NAMES)))
        elif kind == 2:
            ops.append(MailboxDeleted(mailbox))
        elif kind == 3:
            ops.append(SubscriptionSet(mailbox, draw(st.booleans())))
        elif kind == 4:
            ops.append(add_instance(user, mailbox.guid, draw(MESSAGE_GUIDS), DATA))
        else:
            ref = add_instance(user, mailbox.guid, draw(MESSAGE_GUIDS), DATA).message
            if kind == 5:
                ops.append(FlagsChanged(ref, frozenset(draw(st.lists(KEYWORDS, max_size=4))),
                                        frozenset(draw(st.lists(KEYWORDS, max_size=2)))))
            else:
                ops.append(MessageExpunged(MessageRef(ref.mailbox, ref.guid, ref.body)))
    return ops


def _files(root: Path) -> list[Path]:
    found = []
    for directory, dirs, files in os.walk(root):
        found.extend(Path(directory) / name for name in [*dirs, *files])
    return found


@settings(settings.get_profile(PROFILE))
@given(operations())
def test_any_signed_bundle_stays_inside_the_maildirs(ops: list[Operation]) -> None:
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        sites = Sites(root)
        sites.add("alpha")
        bravo = sites.add("bravo")
        sites.befriend("alpha", "bravo")
        sites.deliver("alpha", "alice@example.org", ("INBOX",), 1)
        outside = root / "outside"
        outside.mkdir()
        inject(sites, "alpha", ops)
        sites.export("alpha")
        before = {p.name for p in root.iterdir()}
        # A clear error is fine (exit code 2..5); a raw exception is not.
        with contextlib.suppress(BundlesyncError):
            sites.import_("bravo")
            sites.export("bravo")
        assert {p.name for p in root.iterdir()} == before
        assert list(outside.iterdir()) == []
        mail = root / "bravo" / "mail"
        maildirs = [Path(bravo.maildir_path(user)) for user in bravo.users()]
        for path in _files(mail):
            assert not path.is_symlink(), path
            inside = any(path == m or m in path.parents for m in maildirs)
            above = any(path in m.parents for m in maildirs)
            assert inside or above, (path, maildirs)
