"""Imports every command module so each registers its commands on the group."""

from __future__ import annotations

from bundlesync.cli import (
    archive_cmds,  # noqa: F401
    bundle_cmds,  # noqa: F401
    demo_cmd,  # noqa: F401
    restore_cmds,  # noqa: F401
    site_cmds,  # noqa: F401
)
