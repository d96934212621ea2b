"""Real sites on Maildir stores, as in the operations tests."""

from __future__ import annotations

from tests.operations.conftest import Sites, sites

__all__ = ["Sites", "sites"]
