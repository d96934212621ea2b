"""Hypothesis settings profiles for the stateful replication test.

* ``ci`` (default): 200 examples of up to 40 steps each -- enough to find the
  interleavings that matter, well under two minutes on two cores.
* ``long``: on demand, ``HYPOTHESIS_PROFILE=long python3 -m pytest tests/stateful``.

The profiles are registered here and applied to the state machine only (not
loaded globally), so other tests keep their own settings.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=5000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
