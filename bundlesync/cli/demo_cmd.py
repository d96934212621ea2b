"""``bundlesync demo``: the embedded default -- a real round trip between two sites."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from bundlesync.cli import cli
from bundlesync.cli.site_cmds import now_ms


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to put the two demo sites (default: a new temporary directory).")
@click.option("--messages", default=12, show_default=True,
              help="Messages per folder in the generated store.")
@click.option("--json", "as_json", is_flag=True)
def demo(directory: Path | None, messages: int, as_json: bool) -> None:
    """Set up two demo sites and run a real export/import round trip between them."""
    # Imported here: the demo's mail generator is not needed by the other commands,
    # whose start-up time counts in every nightly run.
    from bundlesync.operations.demo import run_demo  # noqa: PLC0415

    root = directory if directory is not None else Path(tempfile.mkdtemp(prefix="bundlesync-demo-"))
    if root.exists() and any(root.iterdir()):
        raise click.UsageError(f"{root} is not empty; give an empty or new --dir")
    result = run_demo(root, per_folder=messages, now_ms=now_ms,
                      say=(lambda _t: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps({"dir": str(root), "converged": result.converged,
                               "messages": result.messages, "log": result.lines}, indent=2))
    else:
        click.echo(f"The demo sites are in {root} (look at the Maildirs and the bundles there).")
    if not result.converged:
        raise SystemExit(1)
