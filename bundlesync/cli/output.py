"""What every command shares: the global options, and how it speaks.

People read the text on stdout (``say``; ``detail`` under ``-v``), warnings and
progress on stderr; ``-q`` keeps only warnings and errors. Scripts pass
``--json`` and read one JSON document on stdout -- the envelope of
``docs/json.md``, written by :func:`bundlesync.cli.main` even when the command
fails -- and nothing else is written to stdout then.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from bundlesync.cli.progress import Progress
from bundlesync.errors import BundlesyncError

# The version of the JSON envelope and of every command's "result" (docs/json.md).
# Adding a field keeps the version; renaming or removing one, or changing its
# meaning, increases it.
JSON_SCHEMA_VERSION = 1


@dataclass(slots=True)
class Options:
    """The global options, given before or after the subcommand."""

    home: Any = None  # a Path; Any keeps click's values assignable without casts
    json: bool = False
    quiet: bool = False
    verbose: int = 0
    lock_wait: float = 0.0


@dataclass(slots=True)
class Output:
    """One run's output: text for people, or the JSON envelope for scripts."""

    options: Options = field(default_factory=Options)
    command: str = ""
    result: Any = None
    warnings: list[str] = field(default_factory=list)

    @property
    def json(self) -> bool:
        return self.options.json

    def say(self, text: str = "") -> None:
        """A line of the normal report (not under ``-q`` or ``--json``)."""
        if not self.options.json and not self.options.quiet:
            click.echo(text)

    def detail(self, text: str) -> None:
        """A line shown only under ``-v``."""
        if not self.options.json and self.options.verbose and not self.options.quiet:
            click.echo(text)

    def warn(self, text: str) -> None:
        """A warning: on stderr for people (even under ``-q``), in the envelope for scripts."""
        self.warnings.append(text)
        if not self.options.json:
            click.echo(f"warning: {text}", err=True)

    def progress(self, label: str) -> Progress:
        """A progress line on stderr: only on a terminal, never under ``-q`` or ``--json``."""
        quiet = self.options.quiet or self.options.json
        return Progress(label, enabled=False if quiet else None)

    def envelope(self, *, exit_code: int, error: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "command": self.command,
            "ok": exit_code == 0,
            "exit_code": exit_code,
            "result": self.result,
            "warnings": self.warnings,
            "error": error,
        }


def error_code(name: str) -> str:
    """The stable code of an error class: its name in snake case (``LockHeld`` -> ``lock_held``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def error_object(exc: BundlesyncError) -> dict[str, Any]:
    return {"code": error_code(type(exc).__name__), "message": exc.message,
            "hint": exc.hint or None, "exit_code": exc.exit_code}


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()
