"""Dovecot's Maildir text formats: file names, dovecot-keywords, dovecot-uidlist, subscriptions.

The sample texts are what Dovecot 2.3.19 wrote in a scratch Maildir.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundlesync.core.model import ANSWERED, DELETED, DRAFT, FLAGGED, PASSED, SEEN
from bundlesync.stores.dovecot_files import (
    FileName,
    UidlistHeader,
    compose_letters,
    format_keywords,
    format_subscriptions,
    format_uidlist_header,
    keyword_index,
    letters_to_flags,
    misstated_size,
    next_keyword_index,
    parse_keywords,
    parse_subscriptions,
    parse_uidlist_guids,
    parse_uidlist_header,
    size_from_key,
    unknown_letters,
)

# --- file names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "letters", "more"),
    [
        ("1795881272.M213455P7310.vm,S=17,W=20:2,Sab", "1795881272.M213455P7310.vm,S=17,W=20",
         "Sab", ""),
        ("plain", "plain", "", ""),
        ("k:2,", "k", "", ""),
        ("k:2,FS,Xtra", "k", "FS", ",Xtra"),
        ("k:1,experimental", "k", "", ""),
    ],
)
def test_file_names_split_into_key_and_letters(
    name: str, key: str, letters: str, more: str
) -> None:
    parsed = FileName.parse(name)
    assert (parsed.key, parsed.letters, parsed.more) == (key, letters, more)


def test_new_letters_keep_what_follows_the_flag_set() -> None:
    assert FileName.parse("k:2,S,Xtra").with_letters("FS") == "k:2,FS,Xtra"
    assert FileName.parse("plain").with_letters("") == "plain:2,"


def test_size_comes_from_the_s_field() -> None:
    assert size_from_key("1795881272.M213455P7310.vm,S=17,W=20") == 17
    assert size_from_key("1795881272.M213455P7310.vm") is None


@pytest.mark.parametrize(
    ("key", "data", "wrong"),
    [
        ("k,S=5,W=6", b"ab\ncd", False),  # 5 bytes, one LF -> 6 with CRLF
        ("k,S=6,W=6", b"ab\r\ncd", False),  # a CRLF is counted once
        ("k", b"anything", False),
        ("k,S=4", b"ab\ncd", True),
        ("k,S=5,W=5", b"ab\ncd", True),
        ("k,W=7", b"ab\ncd", True),
    ],
)
def test_size_fields_of_a_key_must_describe_the_data(key: str, data: bytes, wrong: bool) -> None:
    assert (misstated_size(key, data) is not None) is wrong


def test_letters_name_system_flags_and_keywords() -> None:
    keywords = {0: "$Label1", 1: "Work"}
    assert letters_to_flags("DFPRSTab", keywords) == {
        DRAFT, FLAGGED, PASSED, ANSWERED, SEEN, DELETED, "$Label1", "Work"
    }


def test_letters_without_a_keyword_or_meaning_are_not_flags_but_are_kept() -> None:
    keywords = {0: "$Label1"}
    assert letters_to_flags("SXac", keywords) == {SEEN, "$Label1"}
    assert unknown_letters("SXac", keywords) == "Xc"


def test_letters_are_composed_in_ascii_order() -> None:
    assert compose_letters(["S", "a", "F"], "Xc") == "FSXac"
    assert compose_letters([], "") == ""


# --- dovecot-keywords ------------------------------------------------------------------


def test_keywords_file_as_dovecot_wrote_it() -> None:
    assert parse_keywords("0 $Label1\n1 Work\n") == {0: "$Label1", 1: "Work"}


def test_keywords_file_lines_dovecot_skips_are_skipped() -> None:
    text = "garbage\n0 a\n26 toohigh\nx y\n3 \n2 c d\n"
    assert parse_keywords(text) == {0: "a", 2: "c d"}


@given(st.dictionaries(st.integers(0, 25), st.from_regex(r"[A-Za-z$][A-Za-z0-9_$]{0,9}",
                                                         fullmatch=True)))
def test_keywords_round_trip(keywords: dict[int, str]) -> None:
    assert parse_keywords(format_keywords(keywords)) == keywords


def test_keywords_format_is_index_space_name_per_line_in_index_order() -> None:
    assert format_keywords({3: "Work", 0: "$Label1"}) == "0 $Label1\n3 Work\n"


def test_keyword_lookup_ignores_case_like_dovecot() -> None:
    keywords = {0: "$Label1", 4: "Work"}
    assert keyword_index(keywords, "work") == 4
    assert keyword_index(keywords, "Other") is None


def test_new_keywords_go_after_the_highest_index_and_stop_at_26() -> None:
    assert next_keyword_index({}) == 0
    assert next_keyword_index({0: "a", 5: "b"}) == 6
    assert next_keyword_index({25: "z"}) is None


# --- dovecot-uidlist -------------------------------------------------------------------

UIDLIST = (
    "3 V1795877455 N1 Gbb3182274eea0a6be222000083ecc375\n"
    "1 :1795877435.M989328P8242Q1.vm\n"
    "5 G1795877436.M14713P8242Q5.vm :1795877545.M889991P11472.vm,S=220,W=230\n"
    "6 W12 Gspecial-guid :abc:2,S\n"
)


def test_uidlist_header_version_3() -> None:
    assert parse_uidlist_header(UIDLIST.splitlines()[0]) == UidlistHeader(
        version=3, uidvalidity=1795877455, next_uid=1, guid="bb3182274eea0a6be222000083ecc375"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1 1234 7", UidlistHeader(1, 1234, 7, None)),
        ("3 V777 N1", UidlistHeader(3, 777, 1, None)),
        ("3 N1 V9 Gnothex", UidlistHeader(3, 9, 1, None)),
        ("", None),
        ("9 V1", None),
        ("garbage", None),
    ],
)
def test_uidlist_header_variants(line: str, expected: UidlistHeader | None) -> None:
    assert parse_uidlist_header(line) == expected


def test_uidlist_guid_extensions_map_base_names_to_guids() -> None:
    assert parse_uidlist_guids(UIDLIST) == {
        "1795877545.M889991P11472.vm,S=220,W=230": "1795877436.M14713P8242Q5.vm",
        "abc": "special-guid",
    }


def test_a_seeded_uidlist_header_reads_back() -> None:
    text = format_uidlist_header(uidvalidity=42, guid="0123456789abcdef0123456789abcdef")
    assert text == "3 V42 N1 G0123456789abcdef0123456789abcdef\n"
    header = parse_uidlist_header(text.strip())
    assert header is not None
    assert (header.uidvalidity, header.guid) == (42, "0123456789abcdef0123456789abcdef")


# --- subscriptions ---------------------------------------------------------------------

DOVECOT_SUBSCRIPTIONS = "V\t2\n\nZ&APw-rich\nWork\tSub\nINBOX\n"


def test_subscriptions_version_2_as_dovecot_wrote_it() -> None:
    assert parse_subscriptions(DOVECOT_SUBSCRIPTIONS) == {
        ("Zürich",), ("Work", "Sub"), ("INBOX",)
    }


def test_subscriptions_version_1_uses_the_hierarchy_separator() -> None:
    assert parse_subscriptions("Work.Sub\nZ&APw-rich\ninbox\n") == {
        ("Work", "Sub"), ("Zürich",), ("INBOX",)
    }


def test_subscription_lines_that_name_no_folder_are_skipped() -> None:
    # A tab-escaped control character is never valid modified UTF-7; an empty
    # level or an unterminated "&" names no folder either.
    text = "V\t2\n\nA\x01tB\tC\nbad&\nEmpty\t\nGood\tOne\n"
    assert parse_subscriptions(text) == {("Good", "One")}


def test_subscriptions_are_written_sorted_in_version_2() -> None:
    text = format_subscriptions([("Work", "Sub"), ("INBOX",), ("Zürich",)])
    assert text == "V\t2\n\nINBOX\nWork\tSub\nZ&APw-rich\n"


@given(st.sets(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]),
                                 min_size=1, max_size=8).filter(lambda s: s.upper() != "INBOX"),
                        min_size=1, max_size=3).map(tuple), max_size=5))
def test_subscriptions_round_trip(paths: set[tuple[str, ...]]) -> None:
    assert parse_subscriptions(format_subscriptions(paths)) == paths
