"""Mail location templates: user name <-> Maildir path, and user enumeration."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundlesync.errors import StoreError
from bundlesync.stores.errors import UnknownUser, UnsafeName, UnsupportedLocation
from bundlesync.stores.location import MailLocation


def test_a_plain_path_is_one_user_with_the_empty_name(tmp_path: Path) -> None:
    location = MailLocation.parse(f"maildir:{tmp_path}/Maildir")
    assert location.single_user
    assert location.path_for("") == f"{tmp_path}/Maildir"
    assert location.users() == []
    (tmp_path / "Maildir").mkdir()
    assert location.users() == [""]
    with pytest.raises(UnknownUser):
        location.path_for("alice")


def test_domain_and_local_part_templates(tmp_path: Path) -> None:
    location = MailLocation.parse(f"{tmp_path}/%d/%n/Maildir")
    assert location.path_for("alice@example.org") == f"{tmp_path}/example.org/alice/Maildir"
    assert location.static_root == str(tmp_path)
    for bad in ("alice", "@example.org", "alice@", "a@b@c"):
        with pytest.raises(UnknownUser):
            location.path_for(bad)


def test_long_variable_names_and_percent(tmp_path: Path) -> None:
    location = MailLocation.parse(f"{tmp_path}/%{{domain}}/%{{username}}%%/Maildir")
    assert location.path_for("bob@x.org") == f"{tmp_path}/x.org/bob%/Maildir"


def test_full_user_template(tmp_path: Path) -> None:
    location = MailLocation.parse(f"{tmp_path}/%u/Maildir")
    assert location.path_for("alice@example.org") == f"{tmp_path}/alice@example.org/Maildir"
    assert location.path_for("bob") == f"{tmp_path}/bob/Maildir"


def test_local_part_only_refuses_users_with_a_domain(tmp_path: Path) -> None:
    location = MailLocation.parse(f"{tmp_path}/%n/Maildir")
    assert location.path_for("bob") == f"{tmp_path}/bob/Maildir"
    with pytest.raises(UnknownUser):
        location.path_for("bob@example.org")


@pytest.mark.parametrize("user", ["../x@y", "a@..", "a/b@c", ".a@b", "a@.b", "a\n@b"])
def test_user_names_cannot_leave_the_template(tmp_path: Path, user: str) -> None:
    location = MailLocation.parse(f"{tmp_path}/%d/%n/Maildir")
    with pytest.raises((UnsafeName, UnknownUser)):
        location.path_for(user)


@pytest.mark.parametrize(
    "text",
    [
        "~/Maildir",
        "relative/%u",
        "/srv/%h/Maildir",
        "/srv/%Lu/Maildir",
        "maildir:/srv/%u:LAYOUT=fs",
        "/srv/%d/Maildir",
    ],
)
def test_unsupported_locations_are_refused(text: str) -> None:
    with pytest.raises(UnsupportedLocation):
        MailLocation.parse(text)


def test_users_are_enumerated_from_the_file_system(tmp_path: Path) -> None:
    for domain, local in [("example.org", "alice"), ("example.org", "bob"), ("x.net", "carol")]:
        (tmp_path / domain / local / "Maildir").mkdir(parents=True)
    (tmp_path / "example.org" / "nomail").mkdir()  # no Maildir: not a user
    (tmp_path / "x.net" / ".hidden" / "Maildir").mkdir(parents=True)
    (tmp_path / "file.org").write_text("not a directory")
    location = MailLocation.parse(f"{tmp_path}/%d/%n/Maildir")
    assert location.users() == ["alice@example.org", "bob@example.org", "carol@x.net"]


def test_users_with_the_full_name_in_one_component(tmp_path: Path) -> None:
    (tmp_path / "alice@example.org" / "Maildir").mkdir(parents=True)
    (tmp_path / "bob" / "Maildir").mkdir(parents=True)
    location = MailLocation.parse(f"{tmp_path}/%u/Maildir")
    assert location.users() == ["alice@example.org", "bob"]


def test_a_variable_used_twice_must_agree(tmp_path: Path) -> None:
    (tmp_path / "alice" / "alice.mail").mkdir(parents=True)
    (tmp_path / "bob" / "carol.mail").mkdir(parents=True)
    location = MailLocation.parse(f"{tmp_path}/%n/%n.mail")
    assert location.users() == ["alice"]


def test_a_missing_root_has_no_users(tmp_path: Path) -> None:
    assert MailLocation.parse(f"{tmp_path}/nothing/%u/Maildir").users() == []


def test_errors_are_store_errors() -> None:
    assert issubclass(UnsupportedLocation, StoreError)
