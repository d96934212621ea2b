"""User masks (-u, --users-file) and case-insensitive mailbox filters."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bundlesync.errors import UsageError
from bundlesync.operations.config import MailboxFilter
from bundlesync.operations.users import UserMatcher, parse_users_text, user_matcher

from .conftest import ALICE, BOB, Net


@pytest.mark.parametrize(("mask", "user", "hit"), [
    ("alice@example.org", "alice@example.org", True),
    ("alice@example.org", "alice2@example.org", False),
    ("*", "anyone@anywhere", True),
    ("*", "", True),
    ("a?ice@*", "alice@example.org", True),
    ("a?ice@*", "aalice@example.org", False),
    ("@example.org", "bob@example.org", True),
    ("@example.org", "bob@example.com", False),
    ("@Example.ORG", "bob@example.org", True),  # domains ignore case
    ("*@example.org", "Bob@EXAMPLE.org", True),
    ("bob@example.org", "Bob@example.org", False),  # local parts do not
    ("@example.org", "bob", False),
])
def test_masks_match_as_doveadm(mask: str, user: str, hit: bool) -> None:
    assert UserMatcher.from_masks([mask]).matches(user) is hit


def test_no_mask_means_everyone() -> None:
    assert UserMatcher().everyone and UserMatcher().matches("whoever@x")


def test_users_file_lines_comments_and_tabs() -> None:
    text = "# staff\nalice@example.org\tuid=5000\n\n  @example.net \n"
    assert parse_users_text(text) == ["alice@example.org", "@example.net"]


def test_bad_masks_and_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        UserMatcher.from_masks([" "])
    with pytest.raises(UsageError, match="does not exist"):
        user_matcher(files=[str(tmp_path / "missing")])
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(UsageError, match="names no user"):
        user_matcher(files=[str(tmp_path / "empty")])


def test_exact_masks_that_match_nobody_are_reported() -> None:
    matcher = UserMatcher.from_masks(["alice@x", "*@y"])
    assert matcher.unmatched(["bob@x"]) == ["alice@x"]


def test_case_insensitive_mailbox_filters() -> None:
    assert MailboxFilter(exclude=("trash",)).wants(("Trash",))  # case-sensitive: kept
    assert not MailboxFilter(iexclude=("trash",)).wants(("Trash",))
    assert not MailboxFilter(iexclude=("archive",)).wants(("Archive", "2024"))
    assert MailboxFilter(iinclude=("inbox",)).wants(("INBOX",))
    assert not MailboxFilter(iinclude=("inbox",)).wants(("Sent",))
    assert MailboxFilter().wants(("Trash",))  # the default skips nothing


def _users_in(net: Net, name: str) -> set[str]:
    return set(net.mail(name).users())


def test_import_applies_only_the_chosen_users_and_holds_the_rest(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    first = net.at("bravo", "import", str(net.drop), "-u", "alice@*")
    assert first.code == 0, first.err
    assert _users_in(net, "bravo") == {ALICE}
    assert "Held back for 1 user" in first.out
    status = net.at("bravo", "status", "--json").json["result"]
    assert status["unapplied"] is not None  # bob's changes, held back, are reported
    second = net.at("bravo", "import", str(net.drop), "--user", "@EXAMPLE.org")
    assert second.code == 0
    assert _users_in(net, "bravo") == {ALICE, BOB}


def test_export_scans_only_the_users_in_the_file(net: Net,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    net.at("bravo", "import", str(net.drop), "-q")
    store = net.mail("bravo")
    for user in (ALICE, BOB):
        store.add_message(user, ("INBOX",), key=f"1700000999.M1P1.{user[:3]}",
                          data=b"Subject: new\r\n\r\nhi\r\n", flags=frozenset(),
                          internal_date=1_700_000_999)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{BOB}\n"))
    result = net.at("bravo", "export", str(net.drop), "--users-file", "-", "--json")
    assert result.code == 0, result.err
    assert result.json["result"]["local_changes"] == 1  # bob's message only


def test_a_mask_naming_an_unknown_user_warns(net: Net) -> None:
    result = net.at("alpha", "export", str(net.drop), "-u", "carol@example.org")
    assert result.code == 0
    assert "no user carol@example.org" in result.err


def test_iexclude_from_the_command_line(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    result = net.at("bravo", "import", str(net.drop), "--iexclude", "sent", "--json")
    assert result.code == 0
    mailboxes = {m["mailbox"] for m in result.json["result"]["changes"]["mailboxes"]}
    assert "Sent" not in mailboxes and "INBOX" in mailboxes
