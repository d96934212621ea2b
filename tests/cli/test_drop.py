"""A stick a courier can read: list, README.txt, export --dry-run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .conftest import Net, Result


def test_list_says_from_whom_for_whom_and_whether_to_erase(net: Net,
                                                          run: Callable[..., Result]) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    net.at("bravo", "export", str(net.drop), "-q")  # leaves bravo's card in the drop
    before = net.at("bravo", "list", str(net.drop), "--json").json["result"]["bundles"]
    assert len(before) == 2
    entry = next(e for e in before if e["origin"]["name"] == "alpha")
    assert entry["origin"]["name"] == "alpha" and entry["recipients"] == ["bravo"]
    assert entry["changes"] > 0 and entry["bodies"] > 0 and entry["size"] > 0
    assert entry["applied_here"] is False and entry["safe_to_erase"] is False
    net.at("bravo", "import", str(net.drop), "-q")
    after = next(e for e in net.at("bravo", "list", str(net.drop), "--json").json["result"][
        "bundles"] if e["origin"]["name"] == "alpha")
    assert after["applied_here"] is True and after["safe_to_erase"] is True
    text = net.at("bravo", "list", str(net.drop))
    assert "alpha -> bravo" in text.out and "safe to erase" in text.out
    # a courier's machine, no site: still lists
    anywhere = run("--home", str(net.root / "no-site"), "list", str(net.drop))
    assert anywhere.code == 0 and "alpha -> bravo" in anywhere.out


def test_export_leaves_a_readme_on_the_stick(net: Net) -> None:
    net.at("alpha", "export", str(net.drop), "-q")
    readme = (net.drop / "README.txt").read_text(encoding="utf-8")
    bundle = next(net.drop.glob("*.bsb")).name
    assert bundle in readme and "from alpha for bravo" in readme
    assert "bundlesync import" in readme


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}


def test_export_dry_run_says_what_would_go_and_changes_nothing(net: Net) -> None:
    before = (_tree(net.drop), _tree(net.homes["alpha"] / "keys"))
    result = net.at("alpha", "export", str(net.drop), "--dry-run", "--json")
    assert result.code == 0, result.err
    preview = result.json["result"]
    assert preview["dry_run"] is True
    assert preview["bundles"][0]["peer"] == "bravo" and preview["bundles"][0]["changes"] > 0
    assert (_tree(net.drop), _tree(net.homes["alpha"] / "keys")) == before
    real = net.at("alpha", "export", str(net.drop), "--json").json["result"]
    assert real["bundles"][0]["changes"] == preview["bundles"][0]["changes"]
    assert real["bundles"][0]["bodies"] == preview["bundles"][0]["bodies"]
