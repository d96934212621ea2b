"""Imports every command module so each registers its commands on the group."""

from __future__ import annotations
