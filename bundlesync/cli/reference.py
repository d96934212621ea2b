"""The CLI reference (docs/cli.md), generated from the commands' own --help.

    python -m bundlesync.cli.reference > docs/cli.md

A test checks that docs/cli.md is what this prints, so the reference never
drifts from the program.
"""

from __future__ import annotations

import click

from bundlesync.cli import _register, cli

# A fixed width, so the text does not depend on the terminal it is generated on.
WIDTH = 88

_HEAD = """\
# CLI reference

Generated from `bundlesync --help` by `python -m bundlesync.cli.reference > docs/cli.md`;
a test checks it is up to date. The global options (`--home`, `--json`, `-q`, `-v`,
`--lock-wait`) are accepted before or after any command. The JSON output is described
in [json.md](json.md), the errors and exit codes in [errors.md](errors.md).
"""


def _commands(group: click.Group, prefix: tuple[str, ...]
              ) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = (*prefix, name)
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


def render_reference() -> str:
    """docs/cli.md: every command's --help, in order."""
    _register()
    root = click.Context(cli, info_name="bundlesync", terminal_width=WIDTH,
                         max_content_width=WIDTH, help_option_names=["-h", "--help"])
    parts = [_HEAD, "## bundlesync\n", "```text", cli.get_help(root), "```\n"]
    contexts: dict[tuple[str, ...], click.Context] = {(): root}
    for path, command in _commands(cli, ()):
        parent = contexts[path[:-1]]
        ctx = click.Context(command, info_name=path[-1], parent=parent, terminal_width=WIDTH,
                            max_content_width=WIDTH, help_option_names=["-h", "--help"])
        contexts[path] = ctx
        parts += [f"## bundlesync {' '.join(path)}\n", "```text", command.get_help(ctx), "```\n"]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    click.echo(render_reference(), nl=False)
