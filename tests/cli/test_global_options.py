"""Global options anywhere, exit codes in --help, -q and -v, --lock-wait."""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bundlesync import errors
from bundlesync.errors import EXIT_LOCKED

from .conftest import Net, Result


def test_home_is_accepted_after_the_subcommand(tmp_path: Path, run: Callable[..., Result]
                                               ) -> None:
    (tmp_path / "mail").mkdir()
    store = str(tmp_path / "mail" / "%d" / "%n" / "Maildir")
    result = run("init", "--site", "x", "--store", store, "--home", str(tmp_path / "x"))
    assert result.code == 0, result.err
    assert (tmp_path / "x" / "bundlesync.toml").exists()
    # ... and after a subgroup's command
    shown = run("key", "show", "--home", str(tmp_path / "x"), "--json")
    assert shown.code == 0 and shown.json["result"]["name"] == "x"


@pytest.mark.parametrize("where", ["before", "after"])
def test_every_global_option_before_or_after(net: Net, where: str) -> None:
    options = ["--home", str(net.homes["alpha"]), "--json", "-q", "-v", "--lock-wait", "1"]
    args = [*options, "peer", "list"] if where == "before" else ["peer", "list", *options]
    result = net.run(*args)
    assert result.code == 0, result.err
    assert result.json["result"]["peers"][0]["name"] == "bravo"


def test_exit_codes_are_listed_in_help(run: Callable[..., Result]) -> None:
    result = run("--help")
    assert result.code == 0
    listed = {int(m) for m in re.findall(r"^\s+(\d+)  \w", result.out, re.MULTILINE)}
    # every exit code the program defines, and nothing else
    defined = {value for name, value in vars(errors).items()
               if name.startswith("EXIT_") and isinstance(value, int)}
    assert listed == defined and {0, 1, 2, 3, 4, 5, 6, 7, 75} <= listed
    assert "status --check: 0 OK, 1 warning, 2 critical" in result.out


def test_quiet_prints_nothing_on_success_and_verbose_adds_detail(net: Net) -> None:
    quiet = net.at("alpha", "export", str(net.drop), "-q")
    assert quiet.code == 0 and quiet.out == ""
    normal = net.at("bravo", "import", str(net.drop))
    assert "Changed:" in normal.out and "INBOX" not in normal.out
    net.at("bravo", "export", str(net.drop), "-q")
    verbose = net.at("alpha", "import", str(net.drop), "-v")
    assert verbose.code == 0
    assert "Skipped" in verbose.out or "Applied" in verbose.out


def _hold_lock(home: Path, seconds: float) -> threading.Thread:
    fd = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def release() -> None:
        time.sleep(seconds)
        os.close(fd)

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_lock_wait_waits_for_the_other_run(net: Net) -> None:
    thread = _hold_lock(net.homes["alpha"], 0.4)
    try:
        refused = net.at("alpha", "export", str(net.drop))
        assert refused.code == EXIT_LOCKED and "--lock-wait" in refused.err
        waited = net.at("alpha", "export", str(net.drop), "--lock-wait", "10")
        assert waited.code == 0, waited.err
    finally:
        thread.join()


def test_status_does_not_fail_at_once_when_a_run_holds_the_site(net: Net) -> None:
    thread = _hold_lock(net.homes["alpha"], 0.3)
    try:
        result = net.at("alpha", "status")
    finally:
        thread.join()
    assert result.code == 0, result.err
    assert "Not scanned: another bundlesync run" in result.out
