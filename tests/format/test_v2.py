"""Bundle format version 2 (formats/bundle-v2.md): round trips, what the clear
header shows, HPKE stanzas bound to the header, the header MAC, padding."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundlesync.core.model import Record, VersionVector
from bundlesync.format import (
    BundleId,
    DecryptionFailed,
    Malformed,
    NotARecipient,
    UnknownSigner,
    find_bundles,
    list_bundle,
    open_bundle,
    write_bundle,
)
from bundlesync.format.cose import sign_digest
from bundlesync.format.crypto import file_keys, header_mac, seal_file_key
from bundlesync.format.header import ClearHeader, HpkeStanza, encode_stanzas, header_hash
from bundlesync.format.limits import END_MAGIC, MAGIC
from bundlesync.keys import SiteIdentity
from tests.format.helpers import A, B, C, counts_of, records, trust, version_vectors

v2_settings = settings(max_examples=60, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow])


@v2_settings
@given(
    recs=st.lists(records, max_size=20),
    encrypt=st.booleans(),
    announce_counts=st.booleans(),
    frame_size=st.integers(16, 4096),
    chunk_size=st.integers(64, 2048),
    max_volume_size=st.none() | st.integers(1024, 8192),
    pad_to=st.none() | st.integers(1, 5000),
    ack=version_vectors,
    seq=st.integers(0, 2**40),
)
def test_v2_write_then_read_gives_the_same_header_and_records(
    *, recs: list[Record], encrypt: bool, announce_counts: bool, frame_size: int,
    chunk_size: int, max_volume_size: int | None, pad_to: int | None, ack: VersionVector,
    seq: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(tmp)
        written = write_bundle(
            drop, identity=A, bundle_id=BundleId(A.site_id, 3, seq), kind="sync",
            recipients=[B.card(), C.card()], ack=ack, assumes=VersionVector(),
            records=iter(recs), created_ms=1_700_000_000_123, encrypt=encrypt,
            max_volume_size=max_volume_size,
            counts=counts_of(recs) if announce_counts else None, frame_size=frame_size,
            chunk_size=chunk_size, format_version=2, pad_to=pad_to)
        assert sorted(p.name for p in drop.iterdir()) == sorted(p.name for p in written.paths)
        assert find_bundles(drop) == [written.paths[0]]
        listing = list_bundle(written.paths[0])
        assert listing.header is None  # nothing but routing facts before verification
        assert listing.bundle_id == BundleId(A.site_id, 3, seq)
        assert listing.format_version == 2
        assert listing.encrypted == encrypt
        for reader in (B, C):
            with open_bundle(written.paths[0], identity=reader, trust=trust(A)) as bundle:
                assert bundle.header == written.header
                assert bundle.header.ack == ack
                assert bundle.header.encrypted == encrypt
                assert list(bundle.records()) == recs


def _stream(path: Path) -> bytes:
    data = path.read_bytes()
    (length,) = struct.unpack(">Q", data[32:40])
    stream = data[48:]
    assert len(stream) == length
    return stream


def _parts(stream: bytes) -> tuple[bytes, bytes, bytes]:
    """(clear header, inner (sealed or not), body) of a version 2 logical stream."""
    (clear_length,) = struct.unpack(">I", stream[:4])
    clear = stream[4:4 + clear_length]
    at = 4 + clear_length
    (inner_length,) = struct.unpack(">I", stream[at:at + 4])
    inner = stream[at + 4:at + 4 + inner_length]
    (cose_length,) = struct.unpack(">I", stream[-12:-8])
    body = stream[at + 4 + inner_length:-12 - cose_length]
    return clear, inner, body


def _assemble(signer: SiteIdentity, clear: bytes, inner: bytes, body: bytes,
              directory: Path) -> Path:
    """A single-volume version 2 bundle signed by ``signer`` from its parts."""
    import hashlib

    from bundlesync.format.volumes import VolumeHead
    stream = struct.pack(">I", len(clear)) + clear + struct.pack(">I", len(inner)) + inner + body
    digest = hashlib.sha256(MAGIC + b"\x00\x02" + stream).digest()
    cose = sign_digest(signer, digest, version=2)
    stream += cose + struct.pack(">I", len(cose)) + END_MAGIC
    head = VolumeHead(1, 1, hashlib.sha256(clear).digest()[:16], len(stream), 0).pack()
    path = directory / "assembled.bsb"
    path.write_bytes(head + stream)
    return path


def _write(tmp: Path, **kwargs: object) -> Path:
    tmp.mkdir(exist_ok=True)
    arguments: dict[str, object] = {
        "identity": A, "bundle_id": BundleId(A.site_id, 1, 7), "kind": "sync",
        "recipients": [B.card(), C.card()], "ack": VersionVector(),
        "assumes": VersionVector(), "records": iter([]), "created_ms": 5,
        "format_version": 2}
    arguments.update(kwargs)
    return write_bundle(tmp, **arguments).paths[0]  # type: ignore[arg-type]


def test_the_clear_header_shows_only_what_routing_needs(tmp_path: Path) -> None:
    path = _write(tmp_path, ack=VersionVector.of({}), created_ms=1_764_000_000_000)
    clear, _, _ = _parts(_stream(path))
    header = cbor2.loads(clear)
    assert set(header) == {"v", "id", "kind", "recipients", "enc"}
    assert set(header["enc"]) == {"chunk", "stanzas", "mac"}
    assert b"site-a" not in _stream(path)  # not even the origin's name


def test_a_bundle_re_signed_by_another_trusted_site_is_refused(tmp_path: Path) -> None:
    # C is trusted by B but is not a recipient: it takes A's bundle, puts its own
    # site id into the clear header and signs it as its own.
    path = _write(tmp_path / "a", recipients=[B.card()])
    clear, inner, body = _parts(_stream(path))
    value = cbor2.loads(clear)
    value["id"][0] = bytes.fromhex(C.site_id)
    forged = _assemble(C, cbor2.dumps(value, canonical=True), inner, body, tmp_path)
    with pytest.raises(DecryptionFailed):
        open_bundle(forged, identity=B, trust=trust(A, C))


def test_the_header_mac_commits_every_recipient_to_one_file_key(tmp_path: Path) -> None:
    # A malicious origin gives C a stanza of another file key (and MACs the header
    # with B's), hoping B and C read different content: C's key fails the MAC.
    file_key = bytes(range(32))
    path = _write(tmp_path / "a", random_bytes=lambda n: file_key[:n])
    clear, inner, body = _parts(_stream(path))
    value = cbor2.loads(clear)
    decoded = ClearHeader(bundle_id=BundleId(A.site_id, 1, 7), kind="sync",
                          recipients=tuple(sorted((B.site_id, C.site_id))),
                          chunk_size=value["enc"]["chunk"])
    h = header_hash(decoded)
    other = seal_file_key(C.card(), bytes(32), h)
    index = [s[0].hex() for s in value["enc"]["stanzas"]].index(C.site_id)
    value["enc"]["stanzas"][index] = [bytes.fromhex(C.site_id), other.enc, other.sealed]
    stanzas = tuple(HpkeStanza(s[0].hex(), s[1], s[2]) for s in value["enc"]["stanzas"])
    value["enc"]["mac"] = header_mac(file_keys(file_key, h).mac, h, encode_stanzas(stanzas))
    forged = _assemble(A, cbor2.dumps(value, canonical=True), inner, body, tmp_path)
    with pytest.raises(DecryptionFailed, match="MAC"):
        open_bundle(forged, identity=C, trust=trust(A))
    with open_bundle(forged, identity=B, trust=trust(A)) as bundle:
        assert list(bundle.records()) == []


def test_a_stanza_moved_to_another_bundle_does_not_open(tmp_path: Path) -> None:
    first = _write(tmp_path / "one", bundle_id=BundleId(A.site_id, 1, 7))
    second = _write(tmp_path / "two", bundle_id=BundleId(A.site_id, 1, 8))
    clear_one = cbor2.loads(_parts(_stream(first))[0])
    clear_two, inner, body = _parts(_stream(second))
    value = cbor2.loads(clear_two)
    value["enc"]["stanzas"] = clear_one["enc"]["stanzas"]
    value["enc"]["mac"] = clear_one["enc"]["mac"]
    forged = _assemble(A, cbor2.dumps(value, canonical=True), inner, body, tmp_path)
    with pytest.raises(DecryptionFailed):
        open_bundle(forged, identity=B, trust=trust(A))


def test_not_a_recipient_and_unknown_signer(tmp_path: Path) -> None:
    path = _write(tmp_path, recipients=[B.card()])
    with pytest.raises(NotARecipient):
        open_bundle(path, identity=C, trust=trust(A))
    with pytest.raises(UnknownSigner):
        open_bundle(path, identity=B, trust=trust(C))


def test_the_origin_name_must_be_the_signers_card_name(tmp_path: Path) -> None:
    impostor = SiteIdentity(name="site-x", signing_secret=A.signing_secret,
                            exchange_secret=A.exchange_secret)
    path = _write(tmp_path, identity=impostor)
    with pytest.raises(Malformed, match="site-x"):
        open_bundle(path, identity=B, trust=trust(A))


def test_padding_hides_the_size_and_must_be_zero(tmp_path: Path) -> None:
    sizes = set()
    for index, seq in enumerate((1, 2)):
        from tests.format.test_v2_helpers import body_of_size
        path = _write(tmp_path / f"p{index}", bundle_id=BundleId(A.site_id, 1, seq),
                      records=iter(body_of_size(100 * seq)), pad_to=4096)
        sizes.add(len(_parts(_stream(path))[2]))
    assert len(sizes) == 1
    plain = _write(tmp_path / "plain", encrypt=False, pad_to=512)
    clear, inner, body = _parts(_stream(plain))
    assert body.endswith(b"\x00")
    spoilt = body[:-1] + b"\x01"
    forged = _assemble(A, clear, inner, spoilt, tmp_path)
    with (pytest.raises(Malformed, match="padding"),
          open_bundle(forged, identity=B, trust=trust(A)) as bundle):
        list(bundle.records())


def test_the_v2_protected_header_is_exactly_ed25519_and_kid(tmp_path: Path) -> None:
    stream = _stream(_write(tmp_path))
    (cose_length,) = struct.unpack(">I", stream[-12:-8])
    tagged = cbor2.loads(stream[-12 - cose_length:-12])
    assert tagged.value[0] == b"\xa2\x01\x32\x04\x50" + bytes.fromhex(A.site_id)


def test_a_v1_header_naming_another_origin_than_the_signers_card_is_refused(
        tmp_path: Path) -> None:
    impostor = SiteIdentity(name="site-x", signing_secret=A.signing_secret,
                            exchange_secret=A.exchange_secret)
    written = write_bundle(tmp_path, identity=impostor, bundle_id=BundleId(A.site_id, 1, 1),
                           kind="sync", recipients=[B.card()], ack=VersionVector(),
                           assumes=VersionVector(), records=iter([]), created_ms=0)
    with pytest.raises(Malformed, match="site-x"):
        open_bundle(written.paths[0], identity=B, trust=trust(A))
