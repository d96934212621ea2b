"""Helpers for the reproductions: a trusted peer that signs whatever it is told to,
and a site's [limits] set for a test."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

from bundlesync.core.model import MailboxRef, MessageAdded, MessageRef, Operation
from bundlesync.format.limits import SiteLimits
from bundlesync.operations.config import read_config, write_config
from bundlesync.operations.ledger import fold_change
from bundlesync.operations.site import CONFIG_NAME, open_site, site_lock
from tests.operations.conftest import Sites, tick


def inject(sites: Sites, name: str, ops: Iterable[Operation]) -> None:
    """Record ``ops`` as changes of site ``name`` -- what a compromised peer (or one
    running other software) could sign: any records within the format."""
    home = sites.homes[name]
    with site_lock(home):
        site = open_site(home)
        try:
            with site.index.transaction():
                now = tick()
                for op in ops:
                    fold_change(site.index, site.new_change(op, now_ms=now))
        finally:
            site.index.close()


def add_instance(user: str, mailbox: str, guid: str, data: bytes) -> MessageAdded:
    """An add of ``data`` (a body the injecting site holds) into ``mailbox``."""
    body = hashlib.sha256(data).hexdigest()
    return MessageAdded(MessageRef(MailboxRef(user, mailbox), guid, body), len(data),
                        1_700_000_000, frozenset())


def set_limits(sites: Sites, name: str, **limits: int) -> None:
    path = sites.homes[name] / CONFIG_NAME
    config = read_config(path)
    write_config(path, dataclasses.replace(
        config, limits=dataclasses.replace(SiteLimits(), **limits)))
