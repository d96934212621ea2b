"""Small record builders for the version 2 tests."""

from __future__ import annotations

import hashlib
import random

from bundlesync.core.model import Body


def body_of_size(size: int) -> list[Body]:
    """One message body of ``size`` incompressible bytes."""
    data = random.Random(size).randbytes(size)
    return [Body(hashlib.sha256(data).hexdigest(), data)]
