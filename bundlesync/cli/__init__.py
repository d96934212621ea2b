"""The command line: a thin click layer over ``bundlesync.operations``.

Only :func:`main` catches :class:`~bundlesync.errors.BundlesyncError`; it prints
the message and the hint on stderr and exits with the error's code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bundlesync import __version__
from bundlesync.errors import EXIT_INTERNAL, BundlesyncError, file_system_error


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="bundlesync")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BUNDLESYNC_HOME",
    default=None,
    help="The site's state directory (default: $BUNDLESYNC_HOME, else a per-user data directory).",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """Replicate Maildir mail stores between sites with no network, through signed bundles."""
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


def _register() -> None:
    # Each module adds its commands to ``cli``; imported here so that ``--help``
    # lists them all and each stays small.
    from bundlesync.cli import commands  # noqa: F401, PLC0415 - commands import cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bundlesync`` console script."""
    _register()
    try:
        code = cli.main(args=argv, prog_name="bundlesync", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BundlesyncError as exc:
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing half-done was kept.", err=True)
        return 130
    except OSError as exc:
        # A file-system boundary that no layer translated: still the operator's
        # problem (full, read-only, failing or forbidden), never "a bug".
        error = file_system_error(exc)
        click.echo(f"error: {error.message}", err=True)
        click.echo(f"hint: {error.hint}", err=True)
        return error.exit_code
    except Exception as exc:  # the last line of defence: a bug
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("hint: this is a bug in bundlesync; please report it with the command you ran.",
                   err=True)
        return EXIT_INTERNAL
    # click returns the code of ctx.exit(); a command that just returns gives None.
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
