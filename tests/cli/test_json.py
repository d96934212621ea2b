"""--json: one versioned envelope on stdout for every command, even on failure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bundlesync.errors import EXIT_LOCAL, EXIT_USAGE

from .conftest import Net, Result


def _check_envelope(data: dict[str, object], command: str, *, ok: bool) -> None:
    assert data["schema_version"] == 1
    assert data["command"] == command
    assert data["ok"] is ok
    assert set(data) == {"schema_version", "command", "ok", "exit_code", "result", "warnings",
                         "error"}


def test_every_command_answers_in_the_envelope(net: Net) -> None:
    drop = str(net.drop)
    commands = [
        ("key show", ["key", "show"]),
        ("key export", ["key", "export", str(net.root / "again.card")]),
        ("peer list", ["peer", "list"]),
        ("status", ["status"]),
        ("export", ["export", drop, "--dry-run"]),
        ("export", ["export", drop]),
        ("list", ["list", drop]),
    ]
    for command, args in commands:
        result = net.at("alpha", *args, "--json")
        assert result.code == 0, (command, result.err)
        _check_envelope(result.json, command, ok=True)
    bundle = next(net.drop.glob("*.bsb"))
    for command in ("inspect", "verify"):
        result = net.at("bravo", command, str(bundle), "--json")
        _check_envelope(result.json, command, ok=True)
    imported = net.at("bravo", "import", drop, "--json")
    _check_envelope(imported.json, "import", ok=True)


def test_an_error_is_an_object_with_a_code_on_stdout(tmp_path: Path,
                                                    run: Callable[..., Result]) -> None:
    result = run("--json", "--home", str(tmp_path / "nowhere"), "status")
    assert result.code == EXIT_LOCAL
    _check_envelope(result.json, "status", ok=False)
    error = result.json["error"]
    assert error["code"] == "config_error" and error["exit_code"] == EXIT_LOCAL
    assert "bundlesync init" in error["hint"]
    assert "error:" in result.err  # people still read it on stderr


def test_a_usage_error_is_json_too(run: Callable[..., Result]) -> None:
    result = run("export", "--no-such-option", "--json")
    assert result.code == EXIT_USAGE
    assert result.json["error"]["code"] == "usage_error"


def test_names_are_plain_and_paths_are_relative_to_the_drop(net: Net) -> None:
    exported = net.at("alpha", "export", str(net.drop), "--json").json["result"]
    name = exported["bundles"][0]["paths"][0]
    assert "/" not in name and (net.drop / name).exists()
    inspected = net.at("alpha", "inspect", str(net.drop / name), "--json").json["result"]
    assert inspected["origin"]["name"] == "alpha"
    assert all("(this site)" not in (r["name"] or "") for r in inspected["recipients"])
    net.at("bravo", "import", str(net.drop), "-q")
    net.at("bravo", "export", str(net.drop), "-q")
    net.at("alpha", "import", str(net.drop), "-q")
    again = net.at("alpha", "export", str(net.drop), "--json").json["result"]
    assert all("/" not in removed for removed in again["removed"])


def test_a_dry_run_never_says_applied(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    result = net.at("bravo", "import", str(net.drop), "--dry-run", "--json").json["result"]
    assert result["dry_run"] is True
    assert [b["status"] for b in result["bundles"]] == ["would apply"]
