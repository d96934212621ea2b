"""Whole writes and atomic replacement (bundlesync.fsio), on a real directory."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from bundlesync import fsio
from bundlesync.errors import ConfigError
from bundlesync.operations.config import CONFIG_NAME, SiteConfig, read_config, write_config


def test_atomic_write_replaces_the_file_with_the_exact_mode(tmp_path: Path) -> None:
    target = tmp_path / "bundlesync.toml"
    target.write_text("old")
    old_umask = os.umask(0o077)
    try:
        fsio.atomic_write(target, b"new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundlesync.toml"]


def test_two_writers_never_share_a_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "card.bsc"
    names = {fsio.temp_path(target).name for _ in range(200)}
    assert len(names) == 200
    assert all(n.startswith(".card.bsc.") and n.endswith(fsio.TEMP_SUFFIX) for n in names)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "x"
    with pytest.raises(FileNotFoundError):
        fsio.atomic_write(target, b"data")
    good = tmp_path / "keep"
    good.write_bytes(b"old")
    (tmp_path / "blocker").mkdir()
    with pytest.raises(IsADirectoryError):
        fsio.atomic_write(tmp_path / "blocker", b"data")
    assert good.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "keep"]


def test_write_all_writes_every_byte_to_a_pipe() -> None:
    # A pipe takes at most its buffer per write: the loop must go on.
    data = os.urandom(1 << 20)
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert fsio.write_all(write_fd, data) == len(data)
    finally:
        os.close(write_fd)
        reader.join()
        os.close(read_fd)
    assert bytes(received) == data


def test_the_configuration_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    write_config(path, SiteConfig(name="alpha", store=str(tmp_path / "mail")))
    write_config(path, SiteConfig(name="alpha", store=str(tmp_path / "other")))
    assert read_config(path).store == str(tmp_path / "other")
    assert [p.name for p in tmp_path.iterdir()] == [CONFIG_NAME]


def test_an_unwritable_configuration_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write the configuration"):
        write_config(tmp_path / "gone" / CONFIG_NAME, SiteConfig(name="a", store="/x"))


def test_a_batch_is_synced_once_per_file_system(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(fsio, "_syncfs", [lambda fd: synced.append(os.fstat(fd).st_dev) or 0])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fsio.sync_file_systems([tmp_path / "a", tmp_path / "b", tmp_path / "gone"])
    assert synced == [os.stat(tmp_path).st_dev]


def test_without_syncfs_every_file_system_is_synced(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []
    monkeypatch.setattr(fsio, "_syncfs", [None])
    monkeypatch.setattr(os, "sync", lambda: calls.append(None))
    fsio.sync_file_systems([tmp_path])
    assert calls == [None]


def test_a_failed_syncfs_is_an_error_not_a_durable_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsio, "_syncfs", [lambda fd: -1])
    with pytest.raises(OSError):  # noqa: PT011 -- the errno is whatever libc last set
        fsio.sync_file_systems([tmp_path])


def test_the_real_syncfs_is_found_on_linux(tmp_path: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("syncfs is Linux's")
    assert fsio._load_syncfs() is not None
    fsio.sync_file_systems([tmp_path])
