"""The command line: a thin click layer over ``bundlesync.operations``.

Only :func:`main` catches :class:`~bundlesync.errors.BundlesyncError`; it prints
the message and the hint on stderr (and, under ``--json``, the error as an
object in the JSON envelope on stdout) and exits with the error's code.

The global options (``--home``, ``--json``, ``-q``, ``-v``, ``--lock-wait``)
are accepted before or after the subcommand: every command and group made on
:data:`cli` gets them (``_GlobalCommand``), and hands their values to the run's
:class:`~bundlesync.cli.output.Options`. A new command module registers itself
with one line in ``bundlesync.cli.commands`` (which imports only the module
of the command being run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from bundlesync import __version__
from bundlesync.cli.output import Output, error_code, error_object
from bundlesync.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    BundlesyncError,
    Declined,
    file_system_error,
)

EXIT_CODES_HELP = """\b
Exit codes:
   0  done
   1  internal error (a bug: please report it)
   2  usage error (the command line cannot be done as asked)
   3  a bundle was rejected; nothing of it was applied
   4  a local problem (configuration, keys, store, state, drop)
   5  partial: some users or bundles failed, the others were done
   6  declined at a prompt; nothing was changed
   7  an archive is damaged (check found problems; see docs/backups.md)
  75  another run holds the site (see --lock-wait)
 130  interrupted (Ctrl-C)

\b
status --check: 0 OK, 1 warning, 2 critical, 3 unknown (Nagios).
See docs/errors.md and docs/json.md."""

NAGIOS_UNKNOWN = 3


def _global_params(*, root: bool) -> list[click.Parameter]:
    # On the root group --home falls back to $BUNDLESYNC_HOME; after the
    # subcommand it only overrides what was given before it.
    return [
        click.Option(
            ["--home"], type=click.Path(file_okay=False, path_type=Path),
            envvar="BUNDLESYNC_HOME" if root else None, default=None,
            help="The site's state directory (default: $BUNDLESYNC_HOME, else a per-user "
                 "data directory)."),
        click.Option(["--json", "as_json"], is_flag=True, default=False,
                     help="Print one JSON document on stdout, even on failure (docs/json.md)."),
        click.Option(["-q", "--quiet"], is_flag=True, default=False,
                     help="Print only warnings and errors."),
        click.Option(["-v", "--verbose"], count=True,
                     help="Print details too: a line per user and mailbox."),
        click.Option(["--lock-wait"], type=click.FloatRange(min=0), default=None,
                     metavar="SECONDS",
                     help="If another run holds the site, wait up to SECONDS for it "
                          "(default: fail at once with code 75)."),
    ]


def _absorb(ctx: click.Context) -> None:
    """Move the global options given after a subcommand into the run's options."""
    out = output_of(ctx)
    opts = out.options
    home = ctx.params.pop("home", None)
    if home is not None:
        opts.home = home
    opts.json = bool(ctx.params.pop("as_json", False)) or opts.json
    opts.quiet = bool(ctx.params.pop("quiet", False)) or opts.quiet
    opts.verbose += int(ctx.params.pop("verbose", 0) or 0)
    lock_wait = ctx.params.pop("lock_wait", None)
    if lock_wait is not None:
        opts.lock_wait = float(lock_wait)
    if ctx.command.name and not isinstance(ctx.command, click.Group):
        out.command = ctx.command_path.partition(" ")[2]


class _GlobalCommand(click.Command):
    """A command that takes the global options (-h, --home, --json, ...) anywhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(*args, **kwargs)
        self.params.extend(_global_params(root=False))

    def invoke(self, ctx: click.Context) -> Any:
        _absorb(ctx)
        return super().invoke(ctx)


class _GlobalGroup(_GlobalCommand, click.Group):
    """A group whose commands and subgroups all take the global options."""

    command_class = _GlobalCommand
    group_class = type  # subgroups are of this class too


class _RootGroup(click.Group):
    command_class = _GlobalCommand
    group_class = _GlobalGroup


def output_of(ctx: click.Context) -> Output:
    """The run's :class:`Output` (made by :func:`main`, or here when click is driven directly)."""
    root = ctx.find_root()
    if not isinstance(root.obj, dict):
        root.obj = {}
    out = root.obj.get("out")
    if not isinstance(out, Output):
        out = Output()
        root.obj["out"] = out
    return out


@click.group(cls=_RootGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(version=__version__, prog_name="bundlesync")
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """Replicate Maildir mail stores between sites with no network, through signed bundles.

    Global options may be given before or after the command.
    """
    opts = output_of(ctx).options
    opts.home = options["home"]
    opts.json = opts.json or bool(options["as_json"])
    opts.quiet = bool(options["quiet"])
    opts.verbose = int(options["verbose"] or 0)
    opts.lock_wait = float(options["lock_wait"] or 0.0)


for _param in _global_params(root=True):
    cli.params.append(_param)


def _register(args: list[str] | None = None) -> None:
    # Each module adds its commands to ``cli`` when imported; only the one the
    # command line names is imported (a no-change export need not load the
    # archive or the bundle reader), every one when none is named, so that
    # ``--help`` lists them all.
    from bundlesync.cli import commands  # noqa: PLC0415 - commands import cli

    commands.load(args)


def _json_requested(args: list[str]) -> bool:
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _finish(out: Output, code: int, error: dict[str, Any] | None) -> int:
    if out.json:
        click.echo(json.dumps(out.envelope(exit_code=code, error=error), indent=2,
                              sort_keys=True, ensure_ascii=False))
    return code


def _say_error(exc: BundlesyncError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)


def _interrupted(out: Output, interrupt: KeyboardInterrupt) -> int:
    """Exit 130 on Ctrl-C. A command that leaves something behind when interrupted
    (backup) re-raises the interrupt with a text saying exactly what."""
    said = str(interrupt) or "Interrupted; nothing half-done was kept."
    click.echo(said, err=True)
    return _finish(out, EXIT_INTERRUPTED, {"code": "interrupted", "message": said,
                                           "hint": None, "exit_code": EXIT_INTERRUPTED})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bundlesync`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    _register(args)
    out = Output()
    # Known before click parses anything, so that a usage error is JSON too.
    out.options.json = _json_requested(args)
    try:
        code = cli.main(args=args, prog_name="bundlesync", standalone_mode=False,
                        obj={"out": out})
    except click.exceptions.Abort as abort:
        if isinstance(abort.__cause__, KeyboardInterrupt):
            # Ctrl-C while a command ran (click wraps it in Abort): an interruption,
            # not a question answered no.
            return _interrupted(out, abort.__cause__)
        exc: BundlesyncError = Declined("the question was answered no, or interrupted")
        _say_error(exc)
        return _finish(out, exc.exit_code, error_object(exc))
    except click.ClickException as click_exc:
        click_exc.show()
        if "status" in args and "--check" in args:
            # A monitoring check with a bad command line is UNKNOWN in the Nagios convention.
            return _finish(out, NAGIOS_UNKNOWN, {
                "code": "usage_error", "message": click_exc.format_message(),
                "hint": "See 'bundlesync status --help'.", "exit_code": NAGIOS_UNKNOWN})
        return _finish(out, click_exc.exit_code or EXIT_USAGE, {
            "code": "usage_error", "message": click_exc.format_message(),
            "hint": "See 'bundlesync COMMAND --help'.", "exit_code": click_exc.exit_code})
    except BundlesyncError as bexc:
        _say_error(bexc)
        return _finish(out, bexc.exit_code, error_object(bexc))
    except KeyboardInterrupt as interrupt:
        return _interrupted(out, interrupt)
    except OSError as os_exc:
        # A file-system boundary that no layer translated: still the operator's
        # problem (full, read-only, failing or forbidden), never "a bug".
        fs_error = file_system_error(os_exc)
        _say_error(fs_error)
        return _finish(out, fs_error.exit_code, error_object(fs_error))
    except Exception as bug:  # the last line of defence: a bug
        message = f"{type(bug).__name__}: {bug}"
        click.echo(f"internal error: {message}", err=True)
        hint = "this is a bug in bundlesync; please report it with the command you ran."
        click.echo(f"hint: {hint}", err=True)
        return _finish(out, EXIT_INTERNAL, {"code": error_code("InternalError"),
                                            "message": message, "hint": hint,
                                            "exit_code": EXIT_INTERNAL})
    # click returns the code of ctx.exit(); a command that just returns gives None.
    final = code if isinstance(code, int) else 0
    if out.json and final == 0 and out.result is None and out.command == "":
        return final  # --help or --version: click printed them
    return _finish(out, final, None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
