"""``bundlesync demo``: the embedded default -- a real round trip between two sites."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from bundlesync.cli import cli
from bundlesync.cli.common import now_ms, out_of


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to put the two demo sites (default: a new temporary directory).")
@click.option("--messages", default=12, show_default=True,
              help="Messages per folder in the generated store.")
@click.pass_context
def demo(ctx: click.Context, directory: Path | None, messages: int) -> None:
    """Set up two demo sites and run a real export/import round trip between them."""
    # Imported here: the demo's mail generator is not needed by the other commands,
    # whose start-up time counts in every nightly run.
    from bundlesync.operations.demo import run_demo  # noqa: PLC0415

    out = out_of(ctx)

    root = directory if directory is not None else Path(tempfile.mkdtemp(prefix="bundlesync-demo-"))
    if root.exists() and any(root.iterdir()):
        raise click.UsageError(f"{root} is not empty; give an empty or new --dir")
    result = run_demo(root, per_folder=messages, now_ms=now_ms,
                      say=out.say)
    out.result = {"dir": str(root), "converged": result.converged,
                  "messages": result.messages, "log": result.lines}
    out.say(f"The demo sites are in {root} (look at the Maildirs and the bundles there).")
    if not result.converged:
        raise SystemExit(1)
