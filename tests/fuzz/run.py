"""Run a fuzz target under atheris (libFuzzer): ``python -m tests.fuzz.run TARGET [flags]``.

TARGET is ``bundle`` or ``card``; flags are libFuzzer's (``-runs=N``,
``-max_total_time=S``, a corpus directory). A crash is written by libFuzzer as
``crash-<sha1>``: move it into ``tests/fuzz/regressions/TARGET/`` with a name
that says what it broke, fix the bug, and the suite replays it from then on.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["bundlesync"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
