"""Real sites driven through the real CLI entry point (in-process, so it is quick)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bundlesync.cli import main
from bundlesync.operations.demo import populate
from bundlesync.stores.maildir import MaildirStore

ALICE = "alice@example.org"
BOB = "bob@example.org"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Net:
    """Sites sharing one drop (the stick), each with its own Maildir store."""

    root: Path
    drop: Path
    homes: dict[str, Path]
    run: Callable[..., Result]

    def mail(self, name: str) -> MaildirStore:
        return MaildirStore(str(self.root / f"{name}-mail" / "%d" / "%n" / "Maildir"))

    def at(self, name: str, *args: str) -> Result:
        return self.run("--home", str(self.homes[name]), *args)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def call(*args: str) -> Result:
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return call


def make_net(root: Path, run: Callable[..., Result], names: tuple[str, ...] = ("alpha", "bravo"),
             *, per_folder: int = 2, befriend: bool = True) -> Net:
    drop = root / "drop"
    drop.mkdir()
    net = Net(root, drop, {}, run)
    for i, name in enumerate(names):
        (root / f"{name}-mail").mkdir()
        if i == 0 and per_folder:
            populate(net.mail(name), per_folder=per_folder)
        net.homes[name] = root / name
        result = net.at(name, "init", "--site", name, "--store",
                        str(root / f"{name}-mail" / "%d" / "%n" / "Maildir"), "-q")
        assert result.code == 0, result.err
        assert net.at(name, "key", "export", str(root / f"{name}.card"), "-q").code == 0
    if befriend:
        for name in names:
            for other in names:
                if other != name:
                    added = net.at(name, "peer", "add", other, str(root / f"{other}.card"),
                                   "--yes", "-q")
                    assert added.code == 0, added.err
    return net


@pytest.fixture(scope="session")
def _net_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Set up once through the CLI, then copied for each test: keys, state and mail
    # are position-independent; only the store paths in the configuration move.
    root = tmp_path_factory.mktemp("net-template")
    capture: list[Result] = []

    def call(*args: str) -> Result:
        result = Result(main(list(args)), "", "")
        capture.append(result)
        return result

    make_net(root, call)
    return root


def copy_net(source: Path, root: Path, run: Callable[..., Result]) -> Net:
    """A copy at ``root`` of the two sites, their stores and drop set up at ``source``.

    Keys, state and mail are position-independent; only the store paths in the
    configuration move. The copies keep the files' mtimes (not their ctimes).
    """
    shutil.copytree(source, root, symlinks=True)
    for home in ("alpha", "bravo"):
        config = root / home / "bundlesync.toml"
        config.write_text(config.read_text(encoding="utf-8").replace(str(source), str(root)),
                          encoding="utf-8")
    return Net(root, root / "drop", {n: root / n for n in ("alpha", "bravo")}, run)


@pytest.fixture
def net(tmp_path: Path, run: Callable[..., Result], _net_template: Path) -> Net:
    return copy_net(_net_template, tmp_path / "net", run)


def exchange_everything(net: Net) -> None:
    """alpha and bravo have exchanged everything, acknowledgements included; only
    alpha's own bundles stay in the drop, as after bravo's site erased what it
    imported (a bundle for alpha, applied or not, is verified by the full path)."""
    for writer, reader in (("alpha", "bravo"), ("bravo", "alpha"), ("alpha", "bravo"),
                           ("bravo", "alpha")):
        assert net.at(writer, "export", str(net.drop), "-q").code == 0
        done = net.at(reader, "import", str(net.drop), "-q")
        assert done.code == 0, done.err
    for path in net.drop.glob("bravo_*.bsb"):
        path.unlink()
