"""Scripts never guess: no prompt without a terminal; declining has its own code."""

from __future__ import annotations

import io

import pytest

from bundlesync.errors import EXIT_DECLINED, EXIT_USAGE

from .conftest import Net


def test_peer_add_without_a_terminal_refuses_without_yes(net: Net) -> None:
    net.at("alpha", "peer", "remove", "bravo", "--yes")
    result = net.at("alpha", "peer", "add", "bravo", str(net.root / "bravo.card"))
    assert result.code == EXIT_USAGE
    assert "no terminal" in result.err and "--yes" in result.err
    assert "No peers yet" in net.at("alpha", "peer", "list").out  # nothing trusted


def test_peer_remove_without_a_terminal_refuses_without_yes(net: Net) -> None:
    result = net.at("alpha", "peer", "remove", "bravo")
    assert result.code == EXIT_USAGE
    assert "bravo" in net.at("alpha", "peer", "list").out


def test_declining_the_fingerprint_has_its_own_exit_code(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    net.at("alpha", "peer", "remove", "bravo", "--yes")
    monkeypatch.setattr("bundlesync.cli.common.stdin_is_terminal", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    result = net.at("alpha", "peer", "add", "bravo", str(net.root / "bravo.card"), "--json")
    assert result.code == EXIT_DECLINED
    assert result.json["error"]["code"] == "declined"
    assert "No peers yet" in net.at("alpha", "peer", "list").out


def test_a_card_from_stdin_and_to_stdout(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    card = net.at("bravo", "key", "export", "-")
    assert card.code == 0 and not (net.root / "-").exists()
    net.at("alpha", "peer", "remove", "bravo", "--yes")
    monkeypatch.setattr("sys.stdin", io.StringIO(card.out))
    added = net.at("alpha", "peer", "add", "bravo", "-", "--yes")
    assert added.code == 0, added.err
    assert "bravo" in net.at("alpha", "peer", "list").out
