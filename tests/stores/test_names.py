"""Names from a bundle can never leave the store or corrupt it."""

from __future__ import annotations

import os
import re

import pytest

from bundlesync.stores.errors import UnsafeName
from bundlesync.stores.names import (
    check_folder_path,
    check_key,
    check_keyword,
    check_user,
    new_message_key,
)

UNSAFE_KEYS = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "a\0b",
    "a\nb",
    "a\x7fb",
    ".hidden",
    "name:2,S",
    "x" * 201,
    "é" * 101,  # 202 bytes in UTF-8
    "a\ud800",
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafeName):
        check_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "1795877435.M989328P8242Q1.vm",
        "1795881272.M213455P7310.vm,S=17,W=20",
        "x" * 200,
        "with space",
    ],
)
def test_keys_dovecot_writes_are_accepted(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "user", ["", ".", "..", "../etc", "a/b", "a\0", ".alice", "a\tb", "u" * 201]
)
def test_unsafe_users_are_refused(user: str) -> None:
    with pytest.raises(UnsafeName):
        check_user(user)


def test_ordinary_users_are_accepted() -> None:
    assert check_user("alice@example.org") == "alice@example.org"


@pytest.mark.parametrize(
    "path",
    [
        (),
        ("",),
        ("..",),
        ("a", ".."),
        ("a/b",),
        ("a.b",),  # "." is the hierarchy separator on disk
        ("a", "b\0"),
        ("ctl\x01",),
        ("Inbox",),  # ambiguous with INBOX
        ("inbox", "Sub"),
        ("z" * 201,),
        ["list", "not", "tuple"],
    ],
)
def test_unsafe_folder_paths_are_refused(path: tuple[str, ...]) -> None:
    with pytest.raises(UnsafeName):
        check_folder_path(path)


@pytest.mark.parametrize(
    "path", [("INBOX",), ("INBOX", "Sub"), ("Archive", "Zürich"), ("A&B",), ("日本語", "x y")]
)
def test_ordinary_folder_paths_are_accepted(path: tuple[str, ...]) -> None:
    assert check_folder_path(path) == path


@pytest.mark.parametrize(
    "keyword", ["", "two words", "a(b", "\\Seen", "naïve", "a]b", 'q"', "k" * 201, "x\n"]
)
def test_keywords_imap_cannot_carry_are_refused(keyword: str) -> None:
    with pytest.raises(UnsafeName):
        check_keyword(keyword)


@pytest.mark.parametrize("keyword", ["$Label1", "Work", "$Forwarded", "NonJunk", "a-b_c.d"])
def test_ordinary_keywords_are_accepted(keyword: str) -> None:
    assert check_keyword(keyword) == keyword


def test_new_keys_follow_dovecots_pattern_and_are_unique() -> None:
    now_ns = 1_795_877_435_989_328_123
    keys = {new_message_key(now_ns=now_ns) for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert check_key(key) == key
        match = re.fullmatch(r"(\d+)\.M(\d+)P(\d+)Q(\d+)\.(.+)", key)
        assert match is not None
        assert match.group(1) == "1795877435"
        assert match.group(2) == "989328"


def test_new_keys_escape_slash_and_colon_in_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "a/b:c")
    # The host part is taken once per process: forget the one taken already.
    monkeypatch.setattr("bundlesync.stores.names._process_parts", [])
    key = new_message_key(now_ns=0)
    assert key.endswith(".a\\057b\\072c")
    assert check_key(key) == key


def test_a_forked_child_names_keys_with_its_own_pid() -> None:
    new_message_key(now_ns=0)  # the parent's pid is taken
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover -- the child reports through the pipe
        os.close(read)
        os.write(write, new_message_key(now_ns=0).encode())
        os._exit(0)
    os.close(write)
    key = os.read(read, 1000).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert f"P{child}Q" in key
    assert f"P{os.getpid()}Q" in new_message_key(now_ns=0)
