"""How long the state machines run, per Hypothesis profile.

The profile is chosen by ``HYPOTHESIS_PROFILE`` and loaded in
``tests/conftest.py`` (``ci`` unless set). Every profile CI uses is
derandomized: a commit is red or green every time, and nothing is read from
or written to an example database. Random exploration is on demand::

    # a few minutes of new random runs (failures replayed from .hypothesis/)
    HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest tests/stateful
    # much longer runs with more steps each
    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/stateful

Each failure found that way becomes an explicit, named regression test (see
``test_regressions.py`` and ``test_product_machine.py``) before it is fixed.
"""

from __future__ import annotations

import os

from hypothesis import settings

_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

# (examples, steps per example): the model machine is cheap; the product
# machine runs real sites (Maildirs, SQLite, signed bundles) and is bounded to
# about 15 seconds of CPU in CI.
_MODEL = {"ci": (200, 40), "explore": (1000, 50), "long": (5000, 100)}
_PRODUCT = {"ci": (30, 30), "explore": (100, 40), "long": (1000, 60)}


def machine_settings(kind: str) -> settings:
    """The settings of one state machine (``model`` or ``product``) under the
    loaded profile."""
    examples, steps = (_MODEL if kind == "model" else _PRODUCT)[_PROFILE]
    return settings(settings.default, max_examples=examples, stateful_step_count=steps)
