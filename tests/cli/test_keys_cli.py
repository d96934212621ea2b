"""Keys over time through the CLI: a new encryption key, revocation, the passphrase."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundlesync.errors import EXIT_BUNDLE_REJECTED, EXIT_LOCAL, EXIT_USAGE
from bundlesync.keys import PASSPHRASE_ENV

from .conftest import Net, Result


def _fingerprint(net: Net, name: str) -> str:
    shown = net.at(name, "key", "show", "--json")
    assert shown.code == 0, shown.err
    fingerprint: str = shown.json["result"]["fingerprint"]
    return fingerprint


def _peers(net: Net, name: str) -> dict[str, str]:
    listed = net.at(name, "peer", "list", "--json").json["result"]["peers"]
    return {p["name"]: p["fingerprint"] for p in listed}


def test_a_new_encryption_key_reaches_a_peer_and_bundles_still_flow(net: Net) -> None:
    old = _fingerprint(net, "alpha")
    card = net.root / "alpha-new.card"
    # Without a terminal it asks for --yes first, and changes nothing.
    refused = net.at("alpha", "key", "rotate-exchange")
    assert refused.code == EXIT_USAGE and "--yes" in refused.err
    assert _fingerprint(net, "alpha") == old
    rotated = net.at("alpha", "key", "rotate-exchange", "--out", str(card), "--yes", "--json")
    assert rotated.code == 0, rotated.err
    result = rotated.json["result"]
    assert result["old_fingerprint"] == old and result["fingerprint"] != old
    assert _fingerprint(net, "alpha") == result["fingerprint"]
    assert Path(result["retired"]).is_file()  # the old key is kept, mode 0600
    assert Path(result["retired"]).stat().st_mode & 0o077 == 0
    # Bravo still trusts the old card; the new one, signed by the same key, replaces it.
    updated = net.at("bravo", "peer", "update", str(card))
    assert updated.code == 0, updated.err
    assert "new encryption key" in updated.out
    assert _peers(net, "bravo")["alpha"] == result["fingerprint"]
    # The superseded card shown again is refused, and nothing changes.
    stale = net.at("bravo", "peer", "update", str(net.root / "alpha.card"))
    assert stale.code == EXIT_LOCAL and "not newer" in stale.err
    assert _peers(net, "bravo")["alpha"] == result["fingerprint"]
    # Bravo now encrypts to the new key, and alpha reads it.
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    assert net.at("bravo", "import", str(net.drop), "-q").code == 0
    assert net.at("bravo", "export", str(net.drop), "-q").code == 0
    back = net.at("alpha", "import", str(net.drop), "--json")
    assert back.code == 0, back.out
    assert {b["status"] for b in back.json["result"]["bundles"]} <= {"applied", "already applied"}


def test_a_card_of_another_key_is_not_an_update(net: Net) -> None:
    # Bravo's own card names another signing key than the one trusted for alpha.
    other = net.at("alpha", "peer", "update", str(net.root / "alpha.card"))
    assert other.code == EXIT_LOCAL and "No trusted peer" in other.err


def test_a_revocation_travels_in_the_drop_and_is_taken_on_import(net: Net) -> None:
    statement = net.root / "alpha.revoked"
    refused = net.at("alpha", "key", "revoke", "--out", str(statement))
    assert refused.code == EXIT_USAGE and not statement.exists()
    revoked = net.at("alpha", "key", "revoke", "--out", str(statement), "--yes", "--json")
    assert revoked.code == 0, revoked.err
    site_id = revoked.json["result"]["site_id"]
    assert statement.read_text(encoding="utf-8").startswith("# bundlesync revocation")
    # The next export carries it beside the card.
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    assert (net.drop / f"{site_id}.bsr").is_file()
    # A dry run says so and changes nothing.
    dry = net.at("bravo", "import", str(net.drop), "--dry-run", "--json")
    assert any("would be taken in" in w for w in dry.json["warnings"])
    assert "alpha" in _peers(net, "bravo")
    taken = net.at("bravo", "import", str(net.drop), "--json")
    assert any("peer alpha" in w and "revoked its key" in w for w in taken.json["warnings"])
    assert "alpha" not in _peers(net, "bravo")
    # Alpha's bundle in the same drop is refused: its key is no longer trusted.
    assert taken.code == EXIT_BUNDLE_REJECTED
    assert {b["status"] for b in taken.json["result"]["bundles"]} == {"rejected"}
    # The key cannot come back through its card.
    again = net.at("bravo", "peer", "add", "alpha", str(net.root / "alpha.card"), "--yes")
    assert again.code == EXIT_LOCAL and "revoked" in again.err


def test_a_forged_revocation_in_the_drop_is_ignored(net: Net) -> None:
    statement = net.root / "alpha.revoked"
    assert net.at("alpha", "key", "revoke", "--out", str(statement), "--yes", "-q").code == 0
    text = statement.read_text(encoding="utf-8")
    created = next(line for line in text.splitlines() if line.startswith("created:"))
    forged = text.replace(created, "created: 1")
    (net.drop / "forged.bsr").write_text(forged, encoding="utf-8")
    (net.drop / "junk.bsr").write_bytes(b"\xff" * 10_000)
    imported = net.at("bravo", "import", str(net.drop), "--json")
    assert imported.code == 0, imported.out
    warnings = imported.json["warnings"]
    assert any("ignored forged.bsr" in w and "signature" in w for w in warnings)
    assert any("ignored junk.bsr" in w for w in warnings)
    assert "alpha" in _peers(net, "bravo")


def test_peer_revoke_takes_a_statement_by_hand(net: Net) -> None:
    statement = net.root / "alpha.revoked"
    assert net.at("alpha", "key", "revoke", "--out", str(statement), "--yes", "-q").code == 0
    tampered = net.root / "tampered.revoked"
    tampered.write_text(statement.read_text(encoding="utf-8").replace("created: ",
                                                                     "created: 9"),
                        encoding="utf-8")
    bad = net.at("bravo", "peer", "revoke", str(tampered))
    assert bad.code == EXIT_LOCAL and "signature does not verify" in bad.err
    assert "alpha" in _peers(net, "bravo")
    taken = net.at("bravo", "peer", "revoke", str(statement), "--json")
    assert taken.code == 0
    assert taken.json["result"]["removed"] == "alpha"
    assert "alpha" not in _peers(net, "bravo")
    again = net.at("bravo", "peer", "revoke", str(statement))
    assert again.code == 0 and "already revoked" in again.out
    missing = net.at("bravo", "peer", "revoke", str(net.root / "nothing"))
    assert missing.code == EXIT_LOCAL and "does not exist" in missing.err


def test_the_passphrase_is_set_changed_and_removed(net: Net, monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    first = net.root / "first.pass"
    first.write_text("correct horse\n", encoding="utf-8")
    # Without a terminal, the new passphrase must come from a file.
    asked = net.at("alpha", "key", "passphrase")
    assert asked.code == EXIT_USAGE and "--passphrase-file" in asked.err
    empty = net.root / "empty.pass"
    empty.write_text("\n", encoding="utf-8")
    assert net.at("alpha", "key", "passphrase", "--passphrase-file", str(empty)).code == (
        EXIT_USAGE)
    both = net.at("alpha", "key", "passphrase", "--remove", "--passphrase-file", str(first))
    assert both.code == EXIT_USAGE
    set_ = net.at("alpha", "key", "passphrase", "--passphrase-file", str(first), "--json")
    assert set_.code == 0, set_.err
    assert set_.json["result"]["protected"] is True
    key_file = net.homes["alpha"] / "keys" / "site.key"
    assert "correct horse" not in key_file.read_text(encoding="utf-8")
    locked = net.at("alpha", "key", "show")
    assert locked.code == EXIT_LOCAL and PASSPHRASE_ENV in locked.err
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    assert net.at("alpha", "key", "show").code == EXIT_LOCAL
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    # Change it: the current one from the environment, the new one from a file.
    second = net.root / "second.pass"
    second.write_text("battery staple", encoding="utf-8")
    assert net.at("alpha", "key", "passphrase", "--passphrase-file", str(second)).code == 0
    assert net.at("alpha", "key", "show").code == EXIT_LOCAL
    monkeypatch.setenv(PASSPHRASE_ENV, "battery staple")
    # A new encryption key keeps the key file sealed under the same passphrase.
    assert net.at("alpha", "key", "rotate-exchange", "--yes", "-q").code == 0
    assert "sealed-secrets" in key_file.read_text(encoding="utf-8")
    removed = net.at("alpha", "key", "passphrase", "--remove", "--json")
    assert removed.json["result"] == {
        "name": "alpha", "site_id": removed.json["result"]["site_id"], "protected": False,
        "was_protected": True}
    monkeypatch.delenv(PASSPHRASE_ENV)
    assert net.at("alpha", "key", "show").code == 0


def _statuses(result: Result) -> set[str]:
    return {b["status"] for b in result.json["result"]["bundles"]}


def test_a_successor_key_keeps_the_site_id_and_travels_in_the_drop(net: Net) -> None:
    before = net.at("alpha", "key", "show", "--json").json["result"]
    succeeded = net.at("alpha", "key", "succeed", "--yes", "--json")
    assert succeeded.code == 0, succeeded.err
    result = succeeded.json["result"]
    assert result["site_id"] == before["site_id"]
    assert result["fingerprint"] != before["fingerprint"]
    # The next export carries the new card (with the old key's statement) beside
    # a bundle signed by the new key; the peer's import takes the card first.
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    taken = net.at("bravo", "import", str(net.drop), "--json")
    assert taken.code == 0, taken.out
    assert _statuses(taken) == {"applied"}
    assert any("peer alpha" in w and "new signing key" in w for w in taken.json["warnings"])
    listed = net.at("bravo", "peer", "list", "--json").json["result"]["peers"]
    assert [(p["name"], p["site_id"], p["fingerprint"]) for p in listed] == [
        ("alpha", before["site_id"], result["fingerprint"])]
    # And back: bravo still encrypts to alpha's site id, now to its new key.
    assert net.at("bravo", "export", str(net.drop), "-q").code == 0
    back = net.at("alpha", "import", str(net.drop), "--json")
    assert back.code == 0, back.out
    assert "applied" in _statuses(back)


def test_a_succession_signed_by_another_key_is_not_taken(net: Net) -> None:
    from dataclasses import replace

    from bundlesync.keys import PeerCard, SiteIdentity, Succession, generate_identity, load_identity
    alpha = load_identity(net.homes["alpha"] / "keys")
    impostor, new = generate_identity("alpha"), generate_identity("alpha")
    # A well-formed succession of alpha's site id -- signed by a key bravo never trusted.
    claim = Succession(alpha.site_id, impostor.signing_public, new.signing_public,
                       new.exchange_public, alpha.created_ms + 1)
    forged = SiteIdentity(name="alpha", signing_secret=new.signing_secret,
                          exchange_secret=new.exchange_secret, created_ms=claim.created_ms,
                          succession=replace(claim, signature=impostor.sign(claim.statement())))
    assert forged.card().site_id == alpha.site_id
    forged.card().write(net.drop / "alpha.bsc")
    imported = net.at("bravo", "import", str(net.drop), "--json")
    assert imported.code == 0 and not imported.json["warnings"]
    by_hand = net.at("bravo", "peer", "update", str(net.drop / "alpha.bsc"))
    assert by_hand.code == EXIT_LOCAL and "continues another key" in by_hand.err
    assert PeerCard.read(net.homes["bravo"] / "peers" / "alpha.bsc") == alpha.card()
    # Its site id altered in the text, the card does not even parse.
    text = forged.card().to_text()
    (net.drop / "alpha.bsc").write_text(text.replace(alpha.site_id, "0" * 32, 1),
                                        encoding="utf-8")
    altered = net.at("bravo", "peer", "update", str(net.drop / "alpha.bsc"))
    assert altered.code == EXIT_LOCAL and "succession" in altered.err


def test_a_new_encryption_key_is_taken_from_the_drop_on_import(net: Net) -> None:
    # A bundle bravo seals to alpha's key before the change still opens after it.
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    assert net.at("bravo", "import", str(net.drop), "-q").code == 0
    assert net.at("bravo", "export", str(net.drop), "-q").code == 0
    rotated = net.at("alpha", "key", "rotate-exchange", "--yes", "--json").json["result"]
    early = net.at("alpha", "import", str(net.drop), "--json")
    assert early.code == 0, early.out
    assert "applied" in _statuses(early)
    assert net.at("alpha", "export", str(net.drop), "-q").code == 0
    taken = net.at("bravo", "import", str(net.drop), "--json")
    assert any("new encryption key" in w for w in taken.json["warnings"])
    assert _peers(net, "bravo")["alpha"] == rotated["fingerprint"]
    assert net.at("bravo", "export", str(net.drop), "-q").code == 0
    back = net.at("alpha", "import", str(net.drop), "--json")
    assert back.code == 0 and "rejected" not in _statuses(back)
