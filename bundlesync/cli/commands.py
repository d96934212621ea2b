"""Imports every command module so each registers its commands on the group.

A new command module adds one line here.
"""

from __future__ import annotations

from bundlesync.cli import (
    archive_cmds,  # noqa: F401
    bundle_cmds,  # noqa: F401
    completion_cmd,  # noqa: F401
    demo_cmd,  # noqa: F401
    drop_cmds,  # noqa: F401
    key_cmds,  # noqa: F401
    restore_cmds,  # noqa: F401
    site_cmds,  # noqa: F401
    status_cmd,  # noqa: F401
    sync_cmds,  # noqa: F401
)
