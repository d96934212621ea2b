"""Fuzz targets: the bundle reader and the card parser, on arbitrary bytes.

Each target returns normally or raises a :class:`BundlesyncError` (the documented
errors, with message and exit code). Anything else escaping is a crash: a bug.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from bundlesync.errors import BundlesyncError
from bundlesync.format import open_bundle
from bundlesync.keys import PeerCard
from tests.format.helpers import VECTORS, A, B, trust

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "regressions"
_TRUST = trust(A)
_WORK = Path(tempfile.mkdtemp(prefix="bundlesync-fuzz-"))
# Every process that loads the targets (the test run, each fuzzing child) leaves
# nothing behind in the temporary directory.
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)


def bundle_target(data: bytes) -> None:
    """Verify and read a one-volume bundle made of ``data`` (as site B, trusting A)."""
    path = _WORK / "fuzz.bsb"
    path.write_bytes(data)
    try:
        with open_bundle(path, identity=B, trust=_TRUST) as bundle:
            for _ in bundle.records():
                pass
    except BundlesyncError:
        pass
    finally:
        os.unlink(path)


def card_target(data: bytes) -> None:
    """Parse ``data`` as a key card."""
    with contextlib.suppress(BundlesyncError):
        PeerCard.from_text(data.decode("utf-8", "replace"), source="fuzz")


TARGETS = {"bundle": bundle_target, "card": card_target}


def seeds(target: str) -> dict[str, bytes]:
    """Name -> bytes: every kept crash, then the seed corpus (the golden vectors;
    the test sites' cards)."""
    found = {f"regressions/{p.name}": p.read_bytes()
             for p in sorted((REGRESSIONS / target).glob("*")) if p.is_file()}
    if target == "bundle":
        found.update({str(p.relative_to(VECTORS)): p.read_bytes()
                      for p in sorted(VECTORS.rglob("*.bsb")) if p.is_file()})
    else:
        found.update({f"card-{site.name}": site.card().to_text().encode()
                      for site in (A, B)})
    return found
