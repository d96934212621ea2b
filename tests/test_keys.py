"""Site identities, cards, the trust store and the site layout (bundle-v2 §3)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bundlesync.keys import (
    InvalidCard,
    InvalidSiteName,
    KeyExists,
    KeyFileInsecure,
    KeyFileInvalid,
    KeyMissing,
    PeerCard,
    PeerConflict,
    PeerNotFound,
    SiteIdentity,
    TrustedCards,
    TrustStore,
    TrustStoreInvalid,
    card_fingerprint,
    card_statement,
    fingerprint_of,
    generate_identity,
    load_identity,
    save_identity,
    site_id_of,
    site_paths,
)


def fixed(name: str, seed: str) -> SiteIdentity:
    return SiteIdentity(name=name,
                        signing_secret=hashlib.sha256(f"{seed} s".encode()).digest(),
                        exchange_secret=hashlib.sha256(f"{seed} x".encode()).digest())


def test_site_id_and_fingerprint_follow_the_spec() -> None:
    identity = generate_identity("ship-a")
    expected = hashlib.sha256(identity.signing_public).digest()[:16].hex()
    assert identity.site_id == expected == site_id_of(identity.signing_public)
    groups = identity.fingerprint.split(" ")
    assert len(groups) == 8
    assert all(len(g) == 4 for g in groups)
    # bundle-v2 §3.1: the fingerprint people compare covers both public keys.
    both = hashlib.sha256(b"bundlesync fingerprint v2\x00" + identity.signing_public
                          + identity.exchange_public).digest()[:16].hex()
    assert "".join(groups) == both
    assert identity.card().fingerprint == identity.fingerprint
    assert fingerprint_of("0123456789abcdef" * 2) == "0123 4567 89ab cdef 0123 4567 89ab cdef"


def test_identities_differ_and_hide_their_secrets() -> None:
    one, two = generate_identity("a"), generate_identity("a")
    assert one.site_id != two.site_id
    assert one.signing_secret.hex() not in repr(one)
    assert "secret" not in repr(one)


def test_save_and_load_an_identity(tmp_path: Path) -> None:
    identity = generate_identity("ship-a")
    key_path = save_identity(identity, tmp_path / "keys")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert load_identity(tmp_path / "keys") == identity
    assert PeerCard.read(tmp_path / "keys" / "site.bsc") == identity.card()
    # Nothing temporary left over from the atomic writes.
    assert sorted(os.listdir(tmp_path / "keys")) == ["site.bsc", "site.key"]
    with pytest.raises(KeyExists):
        save_identity(generate_identity("other"), tmp_path / "keys")
    save_identity(identity, tmp_path / "keys", overwrite=True)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620])
def test_an_exposed_key_file_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    key_path = save_identity(generate_identity("ship-a"), tmp_path)
    key_path.chmod(mode)
    with pytest.raises(KeyFileInsecure) as caught:
        load_identity(tmp_path)
    assert f"{mode:04o}" in caught.value.message
    assert f"chmod 600 '{key_path}'" in caught.value.hint
    assert caught.value.exit_code == 4


def test_missing_and_damaged_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyMissing) as caught:
        load_identity(tmp_path)
    assert "bundlesync init" in caught.value.hint
    key_path = tmp_path / "site.key"
    key_path.write_text("bundlesync-site-key: 1\nname: a\n")
    key_path.chmod(0o600)
    with pytest.raises(KeyFileInvalid, match="signing-secret"):
        load_identity(tmp_path)
    key_path.write_text("bundlesync-site-key: 1\nname: a\nsigning-secret: !!\n"
                        "exchange-secret: AA==\n")
    with pytest.raises(KeyFileInvalid, match="base64"):
        load_identity(tmp_path)
    identity = generate_identity("a")
    save_identity(identity, tmp_path, overwrite=True)
    text = key_path.read_text().replace(identity.site_id, "0" * 32)
    key_path.write_text(text)
    with pytest.raises(KeyFileInvalid, match="does not match"):
        load_identity(tmp_path)


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a b", "a/b", "x" * 65, "café"])
def test_unusable_site_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidSiteName):
        generate_identity(name)


def test_card_text_round_trip_and_tampering() -> None:
    identity = fixed("ship-a", "one")
    card = identity.card()
    text = card.to_text()
    assert PeerCard.from_text(text) == card
    assert card.fingerprint in text
    for secret in (identity.signing_secret, identity.exchange_secret):
        assert base64.b64encode(secret).decode() not in text
    other = fixed("ship-b", "two").card()
    swapped = text.replace(f"site-id: {card.site_id}", f"site-id: {other.site_id}")
    with pytest.raises(InvalidCard, match="altered"):
        PeerCard.from_text(swapped)
    with pytest.raises(InvalidCard, match="fingerprint"):
        PeerCard.from_text(text.replace(card.fingerprint, other.fingerprint))
    with pytest.raises(InvalidCard, match="not a bundlesync site card"):
        PeerCard.from_text("hello: world\n")
    with pytest.raises(InvalidCard, match="twice"):
        PeerCard.from_text(text + "name: again\n")


def test_card_files(tmp_path: Path) -> None:
    card = fixed("ship-a", "one").card()
    card.write(tmp_path / "ship-a.bsc")
    assert stat.S_IMODE((tmp_path / "ship-a.bsc").stat().st_mode) == 0o644
    assert PeerCard.read(tmp_path / "ship-a.bsc") == card
    with pytest.raises(InvalidCard, match="does not exist"):
        PeerCard.read(tmp_path / "nope.bsc")


def test_trust_store_add_list_lookup_remove(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "peers")
    assert store.list() == []
    a, b = fixed("ship-a", "one").card(), fixed("hq", "two").card()
    assert store.add(a) is True
    assert store.add(b) is True
    assert store.add(a) is False  # the same card again: nothing to do
    assert [c.name for c in store.list()] == ["hq", "ship-a"]
    assert store.by_site_id(a.site_id) == a
    assert store.by_name("hq") == b
    assert store.by_signing_key(b.signing_public) == b
    assert store.by_site_id("0" * 32) is None
    assert TrustStore(tmp_path / "peers").by_name("ship-a") == a  # persisted
    assert store.remove("ship-a") == a
    assert store.list() == [b]
    with pytest.raises(PeerNotFound):
        store.remove("ship-a")


def test_trust_store_refuses_clashes(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    a = fixed("ship-a", "one")
    store.add(a.card())
    same_name = fixed("ship-a", "other").card()
    with pytest.raises(PeerConflict, match="the name 'ship-a'") as caught:
        store.add(same_name)
    assert "remove the old card" in caught.value.hint
    same_key = SiteIdentity(name="ship-z", signing_secret=a.signing_secret,
                            exchange_secret=fixed("z", "z").exchange_secret).card()
    with pytest.raises(PeerConflict, match="signing key"):
        store.add(same_key)
    same_exchange = SiteIdentity(name="ship-y", signing_secret=fixed("y", "y").signing_secret,
                                 exchange_secret=a.exchange_secret).card()
    with pytest.raises(PeerConflict, match="encryption key"):
        store.add(same_exchange)
    unsigned = PeerCard(name="ship-u", signing_public=fixed("u", "u").signing_public,
                        exchange_public=fixed("u", "u").exchange_public)
    with pytest.raises(InvalidCard, match="not signed"):
        store.add(unsigned)
    assert store.list() == [a.card()]


def test_a_broken_trust_store_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "junk.bsc").write_text("nothing here\n")
    with pytest.raises(TrustStoreInvalid, match=r"junk\.bsc"):
        TrustStore(tmp_path).list()
    (tmp_path / "junk.bsc").unlink()
    card = fixed("ship-a", "one").card()
    card.write(tmp_path / "one.bsc")
    card.write(tmp_path / "two.bsc")
    with pytest.raises(TrustStoreInvalid, match="same peer"):
        TrustStore(tmp_path).list()


def test_in_memory_trusted_cards() -> None:
    a, b = fixed("ship-a", "one").card(), fixed("hq", "two").card()
    cards = TrustedCards([b, a, a])
    assert cards.list() == [b, a]
    assert cards.by_signing_key(a.signing_public) == a
    assert cards.by_name("nobody") is None


def test_site_paths_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = site_paths(tmp_path)
    assert (paths.home, paths.keys, paths.peers) == (tmp_path, tmp_path / "keys",
                                                     tmp_path / "peers")
    monkeypatch.setenv("BUNDLESYNC_HOME", str(tmp_path / "env"))
    assert site_paths(None).home == tmp_path / "env"
    monkeypatch.delenv("BUNDLESYNC_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert site_paths(None).home == tmp_path / "xdg" / "bundlesync"
    assert site_paths(None).trust_store().directory == tmp_path / "xdg" / "bundlesync" / "peers"


def test_signatures_and_key_agreement() -> None:
    a, b = fixed("a", "one"), fixed("b", "two")
    signature = a.sign(b"message")
    Ed25519PublicKey.from_public_bytes(a.signing_public).verify(signature, b"message")
    assert a.key_agreement(b.exchange_public) == b.key_agreement(a.exchange_public)
    with pytest.raises(ValueError, match=r".+"):
        a.key_agreement(bytes(32))  # a low-order point gives an all-zero secret


# --- signed cards (bundle-v2 §3) ------------------------------------------------------


def _v1_text(card: PeerCard) -> str:
    """The card as bundlesync wrote it before cards were signed."""
    return "".join((
        "bundlesync-card: 1\n", f"name: {card.name}\n", f"site-id: {card.site_id}\n",
        f"fingerprint: {fingerprint_of(card.site_id)}\n",
        f"signing-key: {base64.b64encode(card.signing_public).decode()}\n",
        f"exchange-key: {base64.b64encode(card.exchange_public).decode()}\n"))


def test_a_swapped_encryption_key_changes_the_fingerprint_and_breaks_the_card() -> None:
    site = fixed("ship-a", "one")
    card = site.card()
    thief = fixed("thief", "evil")
    swapped_key = base64.b64encode(thief.exchange_public).decode()
    text = card.to_text()
    altered = text.replace(base64.b64encode(card.exchange_public).decode(), swapped_key)
    assert altered != text
    # The fingerprint people compare no longer matches ...
    assert card_fingerprint(card.signing_public, thief.exchange_public) != card.fingerprint
    with pytest.raises(InvalidCard, match="fingerprint does not match"):
        PeerCard.from_text(altered)
    # ... and with the fingerprint line fixed up too, the signature refuses it.
    forged_fp = card_fingerprint(card.signing_public, thief.exchange_public)
    with pytest.raises(InvalidCard, match="signature") as caught:
        PeerCard.from_text(altered.replace(card.fingerprint, forged_fp))
    assert "another channel" in caught.value.hint


def test_a_card_is_signed_over_a_domain_separated_statement() -> None:
    site = fixed("ship-a", "one")
    site = SiteIdentity(name=site.name, signing_secret=site.signing_secret,
                        exchange_secret=site.exchange_secret, created_ms=1_800_000_000_000)
    card = site.card()
    statement = (b"bundlesync card v2\x00" + len(b"ship-a").to_bytes(2, "big") + b"ship-a"
                 + bytes.fromhex(site.site_id) + site.exchange_public
                 + (1_800_000_000_000).to_bytes(8, "big"))
    assert card.statement() == statement == card_statement(
        name="ship-a", site_id=site.site_id, exchange_public=site.exchange_public,
        created_ms=1_800_000_000_000)
    Ed25519PublicKey.from_public_bytes(site.signing_public).verify(card.signature, statement)
    assert PeerCard.from_text(card.to_text()) == card
    for field, value in (("name", "ship-b"), ("created", "1800000000001")):
        lines = [f"{field}: {value}" if line.startswith(f"{field}:") else line
                 for line in card.to_text().splitlines()]
        with pytest.raises(InvalidCard, match="signature"):
            PeerCard.from_text("\n".join(lines))
    unsigned = card.to_text().replace(f"signature: {base64.b64encode(card.signature).decode()}",
                                      "")
    with pytest.raises(InvalidCard, match="signature"):
        PeerCard.from_text(unsigned)


def test_an_unsigned_card_is_refused_by_peer_add_with_what_to_do(tmp_path: Path) -> None:
    from bundlesync.operations.setup import add_peer, init_site
    home = tmp_path / "home"
    (tmp_path / "mail").mkdir()  # init refuses a store location whose base is missing
    init_site(home, name="hq", store_location=str(tmp_path / "mail" / "%n"), now_ms=1)
    old = fixed("ship-a", "one").card()
    (tmp_path / "ship-a.bsc").write_text(_v1_text(old))
    with pytest.raises(InvalidCard, match="unsigned card") as caught:
        add_peer(home, tmp_path / "ship-a.bsc", name="ship-a")
    assert "export the site's card again" in caught.value.hint
    assert TrustStore(home / "peers").list() == []


def test_a_v1_card_in_the_trust_store_is_upgraded_by_the_signed_card(tmp_path: Path) -> None:
    site = fixed("ship-a", "one")
    (tmp_path / "ship-a.bsc").write_text(_v1_text(site.card()))
    store = TrustStore(tmp_path)
    [legacy] = store.list()  # trusted before cards were signed: still read
    assert not legacy.signed
    assert store.add(site.card()) is True
    [upgraded] = store.list()
    assert upgraded == site.card()
    assert upgraded.signed
    # A "signed upgrade" carrying another encryption key is a conflict, not an upgrade.
    (tmp_path / "ship-a.bsc").write_text(_v1_text(site.card()))
    other = SiteIdentity(name="ship-a", signing_secret=site.signing_secret,
                         exchange_secret=fixed("x", "x").exchange_secret).card()
    with pytest.raises(PeerConflict):
        store.add(other)


def test_a_peer_renamed_locally_keeps_a_valid_card(tmp_path: Path) -> None:
    card = fixed("ship-a", "one").card()
    local = card.renamed("north")
    assert local.name == "north"
    assert local.own_name == "ship-a"
    assert local.signature_valid()
    local.write(tmp_path / "north.bsc")
    assert PeerCard.read(tmp_path / "north.bsc") == local


# --- passphrase on the key file (bundle-v2 §3.5) --------------------------------------


def test_a_key_file_under_a_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bundlesync.keys import KeyFileLocked
    monkeypatch.delenv("BUNDLESYNC_PASSPHRASE", raising=False)
    identity = fixed("ship-a", "one")
    key_path = save_identity(identity, tmp_path, passphrase="correct horse")
    text = key_path.read_text()
    assert base64.b64encode(identity.signing_secret).decode() not in text
    assert base64.b64encode(identity.exchange_secret).decode() not in text
    with pytest.raises(KeyFileLocked, match="passphrase") as caught:
        load_identity(tmp_path)
    assert "BUNDLESYNC_PASSPHRASE" in caught.value.hint
    with pytest.raises(KeyFileLocked, match="does not open"):
        load_identity(tmp_path, passphrase="wrong")
    assert load_identity(tmp_path, passphrase="correct horse") == identity
    monkeypatch.setenv("BUNDLESYNC_PASSPHRASE", "correct horse")
    assert load_identity(tmp_path) == identity
    # The sealed secrets are bound to the site id recorded next to them.
    other = fixed("ship-b", "two").site_id
    key_path.write_text(text.replace(f"site-id: {identity.site_id}", f"site-id: {other}"))
    with pytest.raises(KeyFileLocked):
        load_identity(tmp_path)


# --- a new encryption key (bundle-v2 §3.6) ----------------------------------------------


def test_a_peer_takes_a_newer_encryption_key_signed_by_the_trusted_key(
        tmp_path: Path) -> None:
    site = SiteIdentity(name="ship-a", signing_secret=fixed("a", "one").signing_secret,
                        exchange_secret=fixed("a", "one").exchange_secret, created_ms=100)
    store = TrustStore(tmp_path)
    store.add(site.card().renamed("north"))
    rotated = site.with_new_exchange_key(created_ms=200)
    assert rotated.site_id == site.site_id
    assert rotated.exchange_public != site.exchange_public
    old = store.update(rotated.card())
    assert old.exchange_public == site.exchange_public
    [now] = store.list()
    assert now.name == "north"
    assert now.exchange_public == rotated.exchange_public
    assert now.signature_valid()
    # The superseded card shown again (a replay) does not roll the key back.
    with pytest.raises(PeerConflict, match="not newer"):
        store.update(site.card())
    # A card of another signing key is not an update of this peer.
    with pytest.raises(PeerNotFound):
        store.update(fixed("ship-b", "two").card())
    # Nor is an altered one.
    forged = PeerCard(name="ship-a", signing_public=site.signing_public,
                      exchange_public=fixed("x", "x").exchange_public, created_ms=300,
                      signature=rotated.card().signature)
    with pytest.raises(InvalidCard):
        store.update(forged)


# --- revocation (bundle-v2 §3.7) ------------------------------------------------------


def test_a_revoked_key_is_removed_and_never_trusted_again(tmp_path: Path) -> None:
    from bundlesync.keys import KeyRevoked, Revocation
    site = fixed("ship-a", "one")
    other = fixed("hq", "two")
    store = TrustStore(tmp_path)
    store.add(site.card())
    store.add(other.card())
    revocation = Revocation.from_text(site.revocation(created_ms=5).to_text())
    assert revocation == site.revocation(created_ms=5)
    assert store.revoke(revocation) == site.card()
    assert store.list() == [other.card()]
    assert store.by_signing_key(site.signing_public) is None
    with pytest.raises(KeyRevoked):
        store.add(site.card())
    assert TrustStore(tmp_path).is_revoked(site.signing_public)  # remembered on disk
    # Only the key itself can revoke: a statement signed by another key is refused.
    forged = Revocation(other.signing_public, 5, revocation.signature)
    with pytest.raises(InvalidCard):
        store.revoke(forged)
    with pytest.raises(InvalidCard, match="altered"):
        Revocation.from_text(forged.to_text())
    assert store.list() == [other.card()]


def test_revocations_are_passed_on_through_a_relay_and_junk_is_skipped(tmp_path: Path) -> None:
    from bundlesync.keys import place_revocations, take_revocations
    site, relay_peer = fixed("ship-a", "one"), fixed("hq", "two")
    origin = TrustStore(tmp_path / "ship-a")
    origin.revoke(site.revocation(created_ms=5))  # its own statement, for its exports
    drop, onward = tmp_path / "drop", tmp_path / "onward"
    drop.mkdir()
    onward.mkdir()
    (written,) = place_revocations(origin, drop)
    assert written.name == f"{site.site_id}.bsr"
    # A symlink and a non-file are never read from a drop.
    (drop / "link.bsr").symlink_to(written)
    (drop / "dir.bsr").mkdir()
    relay = TrustStore(tmp_path / "hq")
    relay.add(site.card())
    taken, ignored = take_revocations(relay, drop, dry_run=True)
    assert [t.removed for t in taken] == ["ship-a"] and relay.list() == [site.card()]
    taken, ignored = take_revocations(relay, drop)
    assert [t.removed for t in taken] == ["ship-a"] and relay.list() == []
    assert sorted(note.split(":")[0] for note in ignored) == ["ignored dir.bsr",
                                                               "ignored link.bsr"]
    assert take_revocations(relay, drop)[0] == []  # known already: nothing new
    # The relay passes it on; a site behind it that never trusted the key refuses it later.
    place_revocations(relay, onward)
    behind = TrustStore(tmp_path / "behind")
    behind.add(relay_peer.card())
    assert [t.removed for t in take_revocations(behind, onward)[0]] == [None]
    from bundlesync.keys import KeyRevoked
    with pytest.raises(KeyRevoked):
        behind.add(site.card())


# --- succession (bundle-v2 §3.8) ------------------------------------------------------


def test_a_successor_keeps_the_site_id_through_card_and_key_file(tmp_path: Path) -> None:
    from bundlesync.keys import Succession
    site = fixed("ship-a", "one")
    successor = site.successor(created_ms=300)
    assert successor.site_id == site.site_id != site_id_of(successor.signing_public)
    card = PeerCard.from_text(successor.card().to_text())
    assert card == successor.card() and card.site_id == site.site_id
    assert card.succession is not None and card.succession.old_signing == site.signing_public
    # The key file keeps it, sealed or not.
    for passphrase in (None, "pass"):
        home = tmp_path / str(passphrase)
        save_identity(successor, home, passphrase=passphrase)
        assert load_identity(home, passphrase=passphrase) == successor
    # A trust store that trusts the old key takes the successor's card; once only.
    store = TrustStore(tmp_path / "peers")
    store.add(site.card())
    assert store.update(card) == site.card()
    assert store.by_site_id(site.site_id) == card
    with pytest.raises(PeerConflict):
        store.update(card)
    # The successor's own next card (a new encryption key) is signed by the new key.
    assert store.update(successor.with_new_exchange_key(created_ms=400).card()) == card
    # A statement whose old key is not the trusted one is refused.
    other = fixed("ship-a", "two").successor(created_ms=500)
    assert other.site_id != site.site_id
    with pytest.raises(PeerNotFound):
        store.update(other.card())
    # Any changed byte of the statement breaks the card.
    packed = card.succession.to_field()
    raw = bytearray(base64.b64decode(packed))
    raw[-1] ^= 1
    broken = card.to_text().replace(packed, base64.b64encode(bytes(raw)).decode())
    with pytest.raises(InvalidCard, match="succession"):
        PeerCard.from_text(broken)
    assert Succession.from_field(packed, source="x", error=InvalidCard) == card.succession
