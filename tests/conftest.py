"""Hypothesis profiles for the whole suite, chosen by ``HYPOTHESIS_PROFILE``.

* ``ci`` (the default, and what CI runs): derandomized -- every run of a commit
  draws the same examples, so a commit is red or green every time -- and no
  example database is read or written. A failure found elsewhere is added as an
  explicit ``@example`` or a named regression test, never left to a database.
* ``explore``: random examples, the local example database on (failures are
  replayed on the next run), more examples per test. For looking for bugs::

      HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest tests/stateful tests/properties

* ``long``: like ``explore`` with many more examples and longer state machine
  runs; minutes to hours (see ``tests/stateful/conftest.py``).

Tests that set ``max_examples`` themselves keep their count in every profile;
the state machines scale with the profile (``tests/stateful/conftest.py``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = ("ci", "explore", "long")

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    derandomize=False,
    deadline=None,
    print_blob=True,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    derandomize=False,
    deadline=None,
    print_blob=True,
    max_examples=5000,
    suppress_health_check=[HealthCheck.too_slow],
)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in PROFILES:
    raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: choose one of {', '.join(PROFILES)}")
settings.load_profile(PROFILE)
