"""Mutated, truncated and hostile bundles only ever produce the documented errors:
no other exception, no hang, bounded memory."""

from __future__ import annotations

import random
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundlesync.core.model import (
    Change,
    Dot,
    MailboxDeleted,
    MailboxRef,
    Timestamp,
    VersionVector,
)
from bundlesync.errors import BundleRejected
from bundlesync.format import (
    RECORD_KINDS,
    BadMagic,
    BundleId,
    DecryptionFailed,
    LimitExceeded,
    Malformed,
    MissingVolume,
    NotARecipient,
    SignatureInvalid,
    Truncated,
    UnknownSigner,
    UnsupportedVersion,
    VolumeMismatch,
    open_bundle,
    read_header,
    write_bundle,
)
from bundlesync.format.header import BundleHeader, encode_header
from bundlesync.format.limits import DEFAULT_LIMITS
from bundlesync.format.records import OPTIONAL_KINDS, encode_record
from tests.format.helpers import VECTORS, A, B, C, assemble, frames_of, manifest, trust

DOCUMENTED = (BadMagic, UnsupportedVersion, Truncated, SignatureInvalid, UnknownSigner,
              LimitExceeded, Malformed, NotARecipient, DecryptionFailed, MissingVolume,
              VolumeMismatch)
SINGLE_FILES = sorted(str(m["path"]) for m in manifest() if str(m["path"]).count("/") == 1)


def read_everything(path: Path) -> int:
    """Open as B (trusting A), read every record; return how many."""
    with open_bundle(path, identity=B, trust=trust(A)) as bundle:
        return sum(1 for _ in bundle.records())


def outcome(path: Path) -> str:
    """"ok", or the name of the documented error reading ``path`` raised."""
    error: BundleRejected | None = None
    try:
        read_everything(path)
    except BundleRejected as exc:
        error = exc
    if error is None:
        return "ok"
    assert isinstance(error, DOCUMENTED), f"undocumented {type(error).__name__}: {error}"
    assert error.message
    return type(error).__name__


def header_outcome(path: Path) -> None:
    error: BundleRejected | None = None
    try:
        read_header(path)
    except BundleRejected as exc:
        error = exc
    assert error is None or isinstance(error, DOCUMENTED), type(error).__name__


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(len(buf) + 1) if buf else 0
        if kind == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif kind == 2:
            del buf[at:]
        elif kind == 3:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            del buf[at:at + rng.randint(1, 64)]
    return bytes(buf)


@pytest.mark.timeout(120)
def test_mutated_vectors_give_only_documented_errors_in_bounded_memory(tmp_path: Path) -> None:
    rng = random.Random(20251124)
    seen: set[str] = set()
    target = tmp_path / "mutant.bsb"
    tracemalloc.start()
    try:
        for round_ in range(3000):
            original = (VECTORS / SINGLE_FILES[round_ % len(SINGLE_FILES)]).read_bytes()
            target.write_bytes(mutate(original, rng))
            seen.add(outcome(target))
            header_outcome(target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The decompression bomb vector alone would take 16 MiB if it were expanded.
    assert peak < 8 * 1024 * 1024
    assert {"BadMagic", "Truncated", "SignatureInvalid", "Malformed"} <= seen


@pytest.mark.timeout(60)
def test_every_truncation_of_a_vector_is_refused(tmp_path: Path) -> None:
    for name in ("valid/plain.bsb", "valid/encrypted.bsb", "valid/empty.bsb"):
        data = (VECTORS / name).read_bytes()
        target = tmp_path / "cut.bsb"
        for length in range(len(data)):
            target.write_bytes(data[:length])
            got = outcome(target)
            assert got in {"Truncated", "BadMagic"}, (name, length, got)


def test_missing_and_mixed_volumes(tmp_path: Path) -> None:
    vector = next(m for m in manifest() if m["name"] == "multivolume")
    first = VECTORS / str(vector["path"])
    volumes = sorted(first.parent.iterdir())
    for path in volumes:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    # A truncated second volume.
    second = tmp_path / volumes[1].name
    second.write_bytes(volumes[1].read_bytes()[:-5])
    assert outcome(tmp_path / volumes[0].name) == "Truncated"
    # The second volume of another bundle under the expected name.
    other = sorted((VECTORS / "invalid/missing_volume").iterdir())[-1]
    second.write_bytes(other.read_bytes())
    assert outcome(tmp_path / volumes[0].name) == "MissingVolume"


# --- validly signed garbage: reaches the frame, record and header decoders ------------


def header_for(counts: dict[str, int], *, frame_size: int = 4096, encrypted: bool = False
               ) -> bytes:
    return encode_header(BundleHeader(
        bundle_id=BundleId(A.site_id, 1, 1), created_ms=0, kind="sync", origin_site=A.site_id,
        origin_name=A.name, origin_key=A.signing_public, recipients=(B.site_id,),
        ack=VersionVector(), assumes=VersionVector(), counts=counts, frame_size=frame_size))


def sample_stream() -> tuple[bytes, dict[str, int]]:
    with open_bundle(VECTORS / "valid/plain.bsb", identity=B, trust=trust(A)) as bundle:
        records = list(bundle.records())
        counts = dict(bundle.header.counts)
    assert set(counts) == set(RECORD_KINDS) - OPTIONAL_KINDS
    return b"".join(b"".join(encode_record(r, DEFAULT_LIMITS)) for r in records), counts


STREAM, COUNTS = sample_stream()
fuzz_settings = settings(max_examples=500, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])


@fuzz_settings
@given(data=st.data())
def test_signed_garbage_records_give_only_documented_errors(data: st.DataObject) -> None:
    stream = bytearray(STREAM)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(stream) - 1))
        stream[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    body = frames_of(bytes(stream[:cut]), data.draw(st.integers(1, 2048)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "garbage.bsb"
        path.write_bytes(assemble(A, header_for(COUNTS), body))
        assert outcome(path) in {"ok", "Malformed", "LimitExceeded", "BodyHashMismatch"}


@fuzz_settings
@given(noise=st.binary(max_size=600), frame_size=st.integers(1, 64))
def test_signed_random_record_bytes_give_only_documented_errors(noise: bytes,
                                                                frame_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "noise.bsb"
        path.write_bytes(assemble(A, header_for(COUNTS), frames_of(noise, frame_size)))
        assert outcome(path) in {"ok", "Malformed", "LimitExceeded", "BodyHashMismatch"}


@fuzz_settings
@given(data=st.data())
def test_signed_garbage_headers_give_only_documented_errors(data: st.DataObject) -> None:
    header = bytearray(header_for(COUNTS))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(header) - 1))
        header[at] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "header.bsb"
        path.write_bytes(assemble(A, bytes(header), frames_of(STREAM, 1024)))
        got = outcome(path)
        assert got in {"ok", "Malformed", "LimitExceeded", "UnsupportedVersion",
                       "UnknownSigner", "BodyHashMismatch", "NotARecipient"}


def resign(data: bytes, mutate_body: int) -> bytes:
    """A single-volume bundle with one body byte changed, signed again by A."""
    stream = data[48:]
    (header_length,) = struct.unpack(">I", stream[:4])
    (cose_length,) = struct.unpack(">I", stream[-12:-8])
    header = stream[4:4 + header_length]
    body = bytearray(stream[4 + header_length:-12 - cose_length])
    body[mutate_body] ^= 0x40
    return assemble(A, header, bytes(body))


def test_a_changed_ciphertext_chunk_fails_authentication_even_when_signed(tmp_path: Path
                                                                          ) -> None:
    data = (VECTORS / "valid/encrypted.bsb").read_bytes()
    path = tmp_path / "x.bsb"
    for position in (0, 100, 300, -1):
        path.write_bytes(resign(data, position))
        assert outcome(path) == "DecryptionFailed"


def test_a_change_on_the_drive_after_verification_does_not_reach_the_records(
        tmp_path: Path) -> None:
    path = tmp_path / "x.bsb"
    original = (VECTORS / "valid/plain.bsb").read_bytes()
    (header_length,) = struct.unpack(">I", original[48:52])
    body_start = 52 + header_length
    path.write_bytes(original)
    with open_bundle(VECTORS / "valid/plain.bsb", identity=B, trust=trust(A)) as reference:
        expected = list(reference.records())
    with open_bundle(path, identity=B, trust=trust(A)) as bundle:
        # After verification, one body byte changes on the drive (same size): the
        # records come from the private copy that was verified (bundle-v1 §10.2).
        changed = bytearray(original)
        changed[body_start + 40] ^= 1
        path.write_bytes(bytes(changed))
        assert list(bundle.records()) == expected


def test_a_valid_bundle_swapped_in_after_verification_is_not_read(tmp_path: Path) -> None:
    def bundle_with(counter: int, directory: Path) -> tuple[bytes, Change]:
        directory.mkdir()
        change = Change(Dot(A.site_id, 1, counter), Timestamp(5, 0, A.site_id),
                        MailboxDeleted(MailboxRef("u", "0" * 32)))
        written = write_bundle(directory, identity=A, bundle_id=BundleId(A.site_id, 1, 1),
                               kind="sync", recipients=[B.card()], ack=VersionVector(),
                               assumes=VersionVector(), records=iter([change]), created_ms=0,
                               encrypt=False)
        return written.paths[0].read_bytes(), change

    first, first_change = bundle_with(1, tmp_path / "one")
    second, _ = bundle_with(2, tmp_path / "two")
    # Same header and length; only the body (and so the signature) differ.
    assert len(first) == len(second)
    assert first != second
    path = tmp_path / "x.bsb"
    path.write_bytes(first)
    with open_bundle(path, identity=B, trust=trust(A)) as bundle:
        path.write_bytes(second)  # a valid bundle too -- but not the one verified
        assert list(bundle.records()) == [first_change]


def test_wrong_recipient_and_unknown_signer_on_fresh_bundles(tmp_path: Path) -> None:
    written = write_bundle(tmp_path, identity=C, bundle_id=BundleId(C.site_id, 1, 1),
                           kind="sync", recipients=[A.card()], ack=VersionVector(),
                           assumes=VersionVector(), records=iter([]), created_ms=0)
    with pytest.raises(UnknownSigner):
        open_bundle(written.paths[0], identity=B, trust=trust(A))
    with pytest.raises(NotARecipient):
        open_bundle(written.paths[0], identity=B, trust=trust(C))
    with pytest.raises(NotARecipient):
        open_bundle(written.paths[0], identity=None, trust=trust(C))
    with open_bundle(written.paths[0], identity=A, trust=trust(C)) as bundle:
        assert list(bundle.records()) == []


def test_an_origin_name_with_control_characters_is_malformed(tmp_path: Path) -> None:
    good = header_for(COUNTS)
    evil = good.replace(b"\x66site-a", b"\x66\x1b[2Jxx")  # same length, escape sequence
    assert evil != good
    path = tmp_path / "evil.bsb"
    path.write_bytes(assemble(A, evil, frames_of(STREAM, 1024)))
    assert outcome(path) == "Malformed"
