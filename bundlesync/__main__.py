"""The ``bundlesync`` command (and ``python -m bundlesync``).

A no-change ``export`` or ``import`` is answered by the quick path before the
command line library and the model are imported (``operations.quick``); every
other run, and every run the quick path gives up on, by the command line
(``bundlesync.cli``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bundlesync.operations import quick


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bundlesync`` command: the quick path, else the full one."""
    args = list(sys.argv[1:] if argv is None else argv)
    code = quick.run(args)
    if code is not None:
        return code
    from bundlesync.cli import main as full_main  # noqa: PLC0415 - only when needed

    return full_main(args)


if __name__ == "__main__":
    sys.exit(main())
