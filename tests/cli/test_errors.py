"""Every error class: documented in docs/errors.md, with a hint that names real commands."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import click
import pytest

import bundlesync
from bundlesync.cli import _register, cli
from bundlesync.errors import EXIT_BUNDLE_REJECTED, EXIT_USAGE, BundlesyncError

from .conftest import Net

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _all_error_classes() -> list[type[BundlesyncError]]:
    for module in pkgutil.walk_packages(bundlesync.__path__, "bundlesync."):
        if not module.name.endswith("__main__"):  # running it would start the CLI
            importlib.import_module(module.name)
    found: list[type[BundlesyncError]] = []
    todo: list[type[BundlesyncError]] = [BundlesyncError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    # Classes defined in tests or private helpers are not the user's concern.
    return sorted({c for c in found if c.__module__.startswith("bundlesync.")
                   and not c.__name__.startswith("_")}, key=lambda c: c.__name__)


ERRORS = _all_error_classes()


def _commands() -> set[str]:
    _register()
    names: set[str] = set()
    for name, command in cli.commands.items():
        names.add(name)
        if isinstance(command, click.Group):
            names.update(f"{name} {sub}" for sub in command.commands)
    return names


def test_the_walk_finds_the_error_tree() -> None:
    names = {c.__name__ for c in ERRORS}
    assert {"BundleRejected", "UnknownSigner", "LockHeld", "StoreError", "InvalidCard",
            "Declined", "PromptNeedsTerminal"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_each_error_is_documented_with_a_hint(cls: type[BundlesyncError]) -> None:
    assert f"`{cls.__name__}`" in (DOCS / "errors.md").read_text(encoding="utf-8"), \
        f"{cls.__name__} is not in docs/errors.md"
    exc = cls.__new__(cls)
    BundlesyncError.__init__(exc, "something happened")
    if cls is not BundlesyncError:
        assert exc.hint, f"{cls.__name__} has no hint"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_hints_name_only_commands_that_exist(cls: type[BundlesyncError]) -> None:
    commands = _commands()
    for mentioned in re.findall(r"'bundlesync ([a-z]+(?: [a-z]+)?)", cls.default_hint):
        words = mentioned.split()
        assert mentioned in commands or words[0] in commands, \
            f"{cls.__name__}'s hint names 'bundlesync {mentioned}', which does not exist"


# -- the hints that were wrong --------------------------------------------------------


def test_an_unknown_signer_at_import_says_peer_add(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    net.at("bravo", "peer", "remove", "alpha", "--yes", "-q")
    result = net.at("bravo", "import", str(net.drop), "--json")
    assert result.code == EXIT_BUNDLE_REJECTED
    assert "bundlesync peer add" in result.err
    assert "export again" not in result.err
    assert result.json["error"]["code"] == "unknown_signer"


def test_peer_add_with_a_bundle_says_what_a_card_is(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    bundle = next(net.drop.glob("*.bsb"))
    result = net.at("bravo", "peer", "add", "alpha2", str(bundle), "--yes")
    assert result.code == EXIT_USAGE
    assert "is a bundle, not a key card" in result.err
    assert "codec" not in result.err and "bundlesync card" not in result.err
    assert "key export" in result.err


def test_inspect_of_a_drop_points_to_list(net: Net) -> None:
    result = net.at("alpha", "inspect", str(net.drop))
    assert result.code == EXIT_USAGE
    assert f"bundlesync list {net.drop}" in result.err
    listed = net.at("alpha", "list", str(net.drop))
    assert listed.code == 0


def test_a_missing_bundle_hint_names_a_real_command(net: Net) -> None:
    result = net.at("alpha", "inspect", str(net.drop / "nothing.bsb"))
    assert result.code == EXIT_USAGE
    assert "'bundlesync list DROP'" in result.err
