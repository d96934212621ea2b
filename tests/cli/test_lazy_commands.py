"""The CLI imports only the command module it runs, and the table saying which is right."""

from __future__ import annotations

import subprocess
import sys

import click

from bundlesync.cli import _register, cli
from bundlesync.cli.commands import MODULES, command_named


def test_the_table_names_the_module_of_every_registered_command() -> None:
    _register()
    registered = {name: (command.callback.__module__ if command.callback else "")
                  for name, command in cli.commands.items()}
    # A group's callback may live elsewhere; its module is the one that made it.
    assert set(registered) == set(MODULES)
    for name, module in registered.items():
        assert module == f"bundlesync.cli.{MODULES[name][0]}", name
    # Every subcommand of a group comes from a module listed for that group.
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                where = sub.callback.__module__ if sub.callback else ""
                assert where.removeprefix("bundlesync.cli.") in MODULES[name], (name, sub.name)


def test_the_command_is_the_first_word_that_is_not_a_global_option() -> None:
    assert command_named(["--home", "export", "-q", "import", "d"]) == "import"
    assert command_named(["--lock-wait", "3", "--json", "export", "d"]) == "export"
    assert command_named(["--help"]) is None
    assert command_named(["--", "export"]) is None


def test_an_export_does_not_import_the_archive_or_the_bundle_reader() -> None:
    probe = (
        "import sys\n"
        "from bundlesync.cli import main\n"
        "code = main(['export', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('bundlesync.cli.')))\n"
        "print('bundlesync.archive' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    modules, archive = done.stdout.strip().splitlines()[-2:]
    assert "archive_cmds" not in modules and "restore_cmds" not in modules
    assert "export_cmd" in modules and "import_cmd" not in modules
    assert archive == "False"


def test_help_still_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "bundlesync", "--help"], capture_output=True,
                          text=True, check=True)
    for name in MODULES:
        assert f"  {name} " in done.stdout or f"  {name}\n" in done.stdout, name
