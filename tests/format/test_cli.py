"""``bundlesync inspect`` and ``bundlesync verify``: output, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bundlesync.cli.bundle_cmds  # noqa: F401 - registers the commands
from bundlesync.cli import main
from bundlesync.keys import SiteIdentity, TrustStore, save_identity
from tests.format.helpers import VECTORS, A, B, C, manifest

VALID = [m for m in manifest() if "expect" in m]


def make_site(home: Path, identity: SiteIdentity, *peers: SiteIdentity) -> Path:
    save_identity(identity, home / "keys")
    store = TrustStore(home / "peers")
    for peer in peers:
        store.add(peer.card())
    return home


@pytest.fixture
def site_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("BUNDLESYNC_HOME", raising=False)
    return make_site(tmp_path / "b", B, A)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("vector", VALID, ids=lambda m: str(m["name"]))
def test_inspect_tells_a_person_what_the_bundle_is(site_b: Path, vector: dict[str, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((VECTORS / vector["expect"]).read_text(encoding="utf-8"))
    code, out, err = run(capsys, "--home", str(site_b), "inspect", str(VECTORS / vector["path"]))
    assert code == 0, err
    assert err == ""
    assert "Signature    valid: signed by site-a" in out
    assert "Origin       site-a" in out
    assert "Recipients   site-b (this site)" in out
    counts = expected["header"]["counts"]
    changes = sum(n for k, n in counts.items() if k != "body")
    assert f"Records      {changes:,} changes, {counts['body']:,} message bodies" in out
    for kind, number in counts.items():
        if number:
            assert kind in out
    assert "every record decoded and checked" in out
    if expected["header"]["encrypted"]:
        assert "Encrypted    yes; this site can decrypt it" in out
    else:
        assert "Encrypted    no" in out
    volumes = expected["volumes"]
    assert f"({volumes} volume{'s' if volumes > 1 else ''}," in out


def test_inspect_json_is_machine_readable(site_b: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--home", str(site_b), "inspect", "--json",
                       str(VECTORS / "valid/encrypted.bsb"))
    assert code == 0
    envelope = json.loads(out)
    assert envelope["schema_version"] == 1 and envelope["ok"] is True
    data = envelope["result"]
    expected = json.loads((VECTORS / "valid/encrypted.json").read_text(encoding="utf-8"))
    assert data["signature"] == {"status": "valid", "error": None, "message": None,
                                 "signer": {"name": "site-a", "fingerprint": A.fingerprint}}
    assert data["counts"] == expected["header"]["counts"]
    assert data["body"]["records"] == expected["header"]["counts"]
    assert data["body"]["compression_ratio"] > 0
    assert data["recipients"] == [{"site": B.site_id, "name": "site-b", "this_site": True}]


def test_inspect_an_encrypted_bundle_for_another_site(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    home = make_site(tmp_path / "c", C, A)
    code, out, _ = run(capsys, "--home", str(home), "inspect",
                       str(VECTORS / "valid/encrypted.bsb"))
    assert code == 0
    assert "Signature    valid" in out
    assert "this site cannot decrypt it" in out
    assert "Body         not shown:" in out
    assert "Contents" not in out


def test_inspect_a_tampered_bundle_shows_the_header_and_fails(
        site_b: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--home", str(site_b), "inspect",
                         str(VECTORS / "invalid/body_flip.bsb"))
    assert code == 3
    assert "Signature    NOT VERIFIED (SignatureInvalid)" in out
    assert "unverified header" in out
    assert err.startswith("error: The bundle's bytes do not match the signature")
    assert "hint: The bundle was damaged or altered" in err


def test_inspect_and_verify_without_a_site_using_a_card(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BUNDLESYNC_HOME", str(tmp_path / "nowhere"))
    card = tmp_path / "site-a.bsc"
    A.card().write(card)
    plain = str(VECTORS / "valid/plain.bsb")
    code, out, _ = run(capsys, "inspect", plain, "--trust", str(card))
    assert code == 0
    assert "Recipients   unknown site" in out
    code, out, _ = run(capsys, "verify", plain, "--trust", str(card))
    assert code == 0
    assert out.startswith("OK: plain.bsb is intact and signed by site-a")
    code, out, err = run(capsys, "verify", str(VECTORS / "valid/encrypted.bsb"), "--trust",
                         str(card))
    assert code == 0
    assert "Body not checked:" in out
    code, _, err = run(capsys, "verify", plain)
    assert code == 3
    assert "not a trusted peer" in err
    assert "bundlesync peer add" in err


@pytest.mark.parametrize(
    "vector", [m for m in manifest() if "error" in m], ids=lambda m: str(m["name"]))
def test_verify_fails_every_invalid_vector_with_its_message(
        site_b: Path, vector: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--home", str(site_b), "verify", str(VECTORS / vector["path"]))
    if vector["error"] == "NotARecipient":
        # Intact and signed by a trusted key: verify passes, the body is just not ours.
        assert code == 0
        assert "Body not checked" in out
        return
    assert code == 3
    assert out == ""
    assert err.startswith("error: ")
    assert "\nhint: " in err


def test_verify_checks_the_body_it_can_read(site_b: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--home", str(site_b), "verify",
                       str(VECTORS / "valid/encrypted.bsb"))
    assert code == 0
    assert "Body checked: 17 records decoded" in out


def test_usage_and_local_errors(site_b: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--home", str(site_b), "verify", str(tmp_path / "missing.bsb"))
    assert code == 2
    assert "does not exist" in err
    text = tmp_path / "notes.bsb"
    text.write_text("hello\n")
    code, _, err = run(capsys, "--home", str(site_b), "verify", str(text))
    assert code == 3
    assert "is not a bundlesync bundle" in err
    (site_b / "keys" / "site.key").chmod(0o644)
    code, _, err = run(capsys, "--home", str(site_b), "verify",
                       str(VECTORS / "valid/plain.bsb"))
    assert code == 4
    assert "chmod 600" in err
