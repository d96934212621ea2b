"""``bundlesync completion SHELL``: the script that teaches a shell bundlesync's words."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from bundlesync.cli import cli
from bundlesync.cli.common import out_of
from bundlesync.errors import UsageError

SHELLS = ("bash", "zsh", "fish")


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash:  bundlesync completion bash > /etc/bash_completion.d/bundlesync
    zsh:   bundlesync completion zsh > "${fpath[1]}/_bundlesync"
    fish:  bundlesync completion fish > ~/.config/fish/completions/bundlesync.fish
    """
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click knows every shell in SHELLS
        raise UsageError(f"no completion for {shell}")
    # The variable the generated script sets when it asks for completions.
    script = cls(cli, {}, "bundlesync", "_BUNDLESYNC_COMPLETE").source()
    out = out_of(ctx)
    out.result = {"shell": shell, "script": script}
    if not out.json:
        click.echo(script)
