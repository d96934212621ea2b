"""A full disk is the operator's problem, said clearly: never "internal error", and
the state database's own error keeps its cause (not "cannot rollback")."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.cli import main
from bundlesync.errors import EXIT_LOCAL, EXIT_OK, EXIT_PARTIAL, file_system_error

NOT_ROOT = os.geteuid() != 0


@contextlib.contextmanager
def small_file_system(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path, *, leave: int) -> None:
    """Fill the file system at ``where`` until at most ``leave`` bytes are free."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    with open(where / "filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(0, free - leave))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def _sites(tmp_path: Path, capsys: pytest.CaptureFixture[str], bravo_home: Path) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir()
    for name, home in (("alpha", tmp_path / "alpha"), ("bravo", bravo_home)):
        (tmp_path / f"{name}-mail").mkdir()
        code, text = cli(capsys, "--home", str(home), "init", "--site", name,
                         "--store", str(tmp_path / f"{name}-mail" / "%d" / "%n" / "Maildir"))
        assert code == EXIT_OK, text
        cli(capsys, "--home", str(home), "key", "export", str(tmp_path / f"{name}.card"))
    cli(capsys, "--home", str(tmp_path / "alpha"), "peer", "add", "bravo",
        str(tmp_path / "bravo.card"), "--yes")
    cli(capsys, "--home", str(bravo_home), "peer", "add", "alpha",
        str(tmp_path / "alpha.card"), "--yes")
    inbox = tmp_path / "alpha-mail" / "example.org" / "alice" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (inbox / sub).mkdir(parents=True)
    (inbox / "new" / "1700000000.big").write_bytes(
        b"Subject: big\r\n\r\n" + os.urandom(600_000).hex().encode())
    code, text = cli(capsys, "--home", str(tmp_path / "alpha"), "export", str(drop))
    assert code == EXIT_OK, text
    return drop


@pytest.mark.skipif(NOT_ROOT, reason="mounting a small file system needs root")
@pytest.mark.parametrize("leave", [300_000, 0])
def test_an_import_onto_a_full_disk_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            leave: int) -> None:
    with small_file_system(tmp_path / "small", "8m") as small:
        drop = _sites(tmp_path, capsys, small / "bravo")
        fill(small, leave=leave)
        code, text = cli(capsys, "--home", str(small / "bravo"), "import", str(drop))
        assert code in (EXIT_LOCAL, EXIT_PARTIAL), text
        assert "internal error" not in text
        assert "no transaction is active" not in text
        assert "space" in text.lower() or "full" in text.lower(), text
        # Once there is room again, the import goes through.
        (small / "filler").unlink()
        code, text = cli(capsys, "--home", str(small / "bravo"), "import", str(drop))
        assert code == EXIT_OK, text


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS", "EIO", "EACCES"])
def test_each_file_system_error_names_the_path_and_a_remedy(errno_name: str) -> None:
    import errno
    number = getattr(errno, errno_name)
    error = file_system_error(OSError(number, os.strerror(number), "/srv/spool/x"))
    assert "/srv/spool/x" in error.message
    assert error.exit_code == EXIT_LOCAL
    assert error.hint and "bug" not in error.hint
