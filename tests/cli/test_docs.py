"""The documentation runs: every shell block in docs/, and the CLI reference.

Shell blocks (```sh) run in a temporary directory, in document order, tutorial
first. A block whose first line is ``# on shore`` or ``# on ship`` runs as that
site: ``/var/vmail``, ``/var/lib/bundlesync`` and the site's working directory are
that site's own, ``/media/usb`` is the stick both share. A block that cannot run
here (systemd, installing into /opt) is marked by the line
``<!-- docs-test: skip: REASON -->`` just above it; a mark without a reason fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bundlesync.cli.reference import render_reference
from bundlesync.operations.demo import populate
from bundlesync.stores.maildir import MaildirStore

DOCS = Path(__file__).resolve().parents[2] / "docs"
ORDER = ["tutorial.md", "operations.md"]  # later documents build on the tutorial's sites
SKIP = re.compile(r"<!-- docs-test: skip: (?P<reason>[^>]*\S)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
SHELLS = {"sh", "bash", "shell"}


def blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, skip reason) of every fenced block."""
    found: list[tuple[str, str, str | None]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        previous = lines[i - 1] if i else ""
        skip = SKIP.match(previous)
        if "docs-test" in previous and skip is None:
            raise AssertionError(f"a docs-test mark without a reason: {previous!r}")
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        found.append((match["lang"], "\n".join(lines[i + 1:end]) + "\n",
                      None if skip is None else skip["reason"]))
        i = end + 1
    return found


def documents() -> list[Path]:
    every = sorted(DOCS.glob("*.md"))
    return [DOCS / n for n in ORDER] + [p for p in every if p.name not in ORDER]


def test_every_shell_block_is_run_or_marked() -> None:
    for doc in documents():
        for lang, code, skip in blocks(doc.read_text(encoding="utf-8")):
            if lang in SHELLS and skip is None:
                assert code.strip(), f"an empty shell block in {doc.name}"
            if lang not in SHELLS:
                # a command must not hide where it is not run
                commands = [line for line in code.splitlines()
                            if re.match(r"^\s*(\$ |\w+\$ +)?bundlesync ", line)]
                assert not commands or skip is not None, (
                    f"{doc.name}: commands in a ```{lang} block are not run: {commands}")


@pytest.mark.slow
def test_the_shell_blocks_in_the_docs_run(tmp_path: Path) -> None:
    stick = tmp_path / "usb"
    stick.mkdir()
    for site in ("shore", "ship"):
        (tmp_path / site / "var" / "vmail").mkdir(parents=True)
    populate(MaildirStore(str(tmp_path / "shore" / "var" / "vmail" / "%d" / "%n" / "Maildir")),
             per_folder=2)
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "bundlesync").exists(), "install the package: pip install -e ."
    ran = 0
    for doc in documents():
        for lang, code, skip in blocks(doc.read_text(encoding="utf-8")):
            if lang not in SHELLS or skip is not None:
                continue
            first = code.splitlines()[0].strip()
            site = first.removeprefix("# on ").strip() if first.startswith("# on ") else "shore"
            root = tmp_path / site
            script = (code.replace("/var/vmail", str(root / "var" / "vmail"))
                      .replace("/var/lib/bundlesync", str(root / "var" / "lib" / "bundlesync"))
                      .replace("/media/usb", str(stick)))
            env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   "BUNDLESYNC_HOME": str(root / "var" / "lib" / "bundlesync")}
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, (
                f"{doc.name}: block failed ({done.returncode}):\n{code}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
            ran += 1
    assert ran >= 10
    # the tutorial's routine converged: the ship holds the shore's mail
    ship = MaildirStore(str(tmp_path / "ship" / "var" / "vmail" / "%d" / "%n" / "Maildir"))
    assert ship.users() == ["alice@example.org", "bob@example.org"]


def test_the_cli_reference_is_generated_from_help() -> None:
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == render_reference(), (
        "docs/cli.md is out of date: python -m bundlesync.cli.reference > docs/cli.md")
