"""Which module defines each command, so that a run imports only the one it needs.

A command module registers its commands on the group when it is imported. The
routine (``export`` with nothing to do, most of all) should not pay for importing
the archive, restore and bundle-reading commands and the libraries behind them:
:func:`load` imports only the module of the command named on the command line,
and every module when that is unknown (``--help``, completion, a typo), so that
click's help and errors list them all. A new command adds a line to
:data:`MODULES`; a test checks the table against what the modules register.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

# The module that defines each command first, then any that add subcommands to it.
MODULES: dict[str, tuple[str, ...]] = {
    "backup": ("archive_cmds",),
    "check": ("archive_cmds",),
    "forget": ("archive_cmds",),
    "prune": ("archive_cmds",),
    "snapshots": ("archive_cmds",),
    "inspect": ("bundle_cmds",),
    "verify": ("bundle_cmds",),
    "completion": ("completion_cmd",),
    "demo": ("demo_cmd",),
    "list": ("drop_cmds",),
    "restore": ("restore_cmds",),
    "view": ("restore_cmds",),
    "init": ("site_cmds",),
    "key": ("site_cmds", "key_cmds"),
    "peer": ("site_cmds", "key_cmds"),
    "status": ("status_cmd",),
    "export": ("export_cmd",),
    "import": ("import_cmd",),
}

# The root group's options that take a value (``--home DIR``): the word after
# them is not the command.
_VALUED = frozenset({"--home", "--lock-wait"})


def command_named(args: Sequence[str]) -> str | None:
    """The subcommand on a command line (the first word that is not a global option)."""
    skip = False
    for word in args:
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word in _VALUED:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def load(args: Sequence[str] | None = None) -> None:
    """Import the command module ``args`` names, or every command module."""
    name = None if args is None else command_named(args)
    completing = any(key.startswith("_BUNDLESYNC_COMPLETE") for key in os.environ)
    wanted = list(MODULES[name]) if name in MODULES and not completing else sorted(
        {module for modules in MODULES.values() for module in modules})
    for module in wanted:
        importlib.import_module(f"bundlesync.cli.{module}")
