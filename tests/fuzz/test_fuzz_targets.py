"""The fuzz targets in the suite: every seed and kept crash replayed, and a bounded
atheris run of each target (a long run is started by hand: tests/fuzz/README.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, seeds

ROOT = Path(__file__).resolve().parents[2]
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_and_kept_crash_is_handled(target: str) -> None:
    corpus = seeds(target)
    assert corpus
    for data in corpus.values():
        TARGETS[target](data)
        # Truncations of a seed are the commonest damage on a stick.
        for cut in (1, 9, 48, 60, len(data) // 2, len(data) - 1):
            TARGETS[target](data[:cut])


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_bounded_fuzz_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number, data in enumerate(seeds(target).values()):
        (corpus / f"seed{number}").write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, "-runs=3000", "-max_total_time=25",
         "-max_len=65536", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
