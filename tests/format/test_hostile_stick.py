"""A drop that serves different bytes on different reads commits nothing forged.

A stick's firmware, a FUSE file system or a writer racing the import can make a
bundle read one way the first time and another way the next. The shim below is
such a file: the first ``switch`` opens of the bundle serve one content, every
later open another. Whatever the switch point, an import must act only on bytes
it verified (bundle-v1 §10.2): no forged acknowledgement, no forged received
mark, no restore procedure, no clock observation from a rejected bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2
import pytest

from bundlesync.core.hlc import MAX_AHEAD_MS
from bundlesync.core.model import Change, Record, Stream, Timestamp, VersionVector
from bundlesync.format import BundleId, find_bundles, open_bundle, write_bundle
from bundlesync.format import volumes as volumes_module
from bundlesync.keys import SiteIdentity
from bundlesync.operations.importer import ImportResult, import_drop
from bundlesync.operations.site import Site, open_site, site_lock
from tests.operations.conftest import Sites, tick

FAR_FUTURE_MS = 2**62
SWITCH_POINTS = range(0, 12)


@dataclasses.dataclass
class Stick:
    sites: Sites
    genuine: Path  # the bundle alpha wrote, as it lies in the drop
    genuine_bytes: bytes
    genuine_id: BundleId
    genuine_ack: VersionVector
    snapshot: Path  # bravo before the import


def _split(data: bytes) -> tuple[int, int]:
    """(body start, body end) in a single-volume bundle file."""
    (header_length,) = struct.unpack(">I", data[48:52])
    (cose_length,) = struct.unpack(">I", data[-12:-8])
    return 52 + header_length, len(data) - 12 - cose_length


def _unsigned(data: bytes) -> bytes:
    """The same bytes with the signature spoilt: what a forger without the key has."""
    spoilt = bytearray(data)
    spoilt[-13] ^= 0xFF
    return bytes(spoilt)


@pytest.fixture
def stick(tmp_path: Path) -> Stick:
    sites = Sites(tmp_path)
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha", encrypt=False)  # a plain bundle: the body is readable
    [genuine] = find_bundles(sites.drop)
    with site_lock(sites.homes["bravo"]):
        bravo = open_site(sites.homes["bravo"])
        try:
            with open_bundle(genuine, identity=bravo.identity, trust=bravo.trust) as bundle:
                header = bundle.header
        finally:
            bravo.index.close()
    snapshot = tmp_path / "bravo-before"
    shutil.copytree(tmp_path / "bravo", snapshot, symlinks=True)
    return Stick(sites, genuine, genuine.read_bytes(), header.bundle_id, header.ack, snapshot)


def _first_change(stick: Stick) -> Change:
    with site_lock(stick.sites.homes["bravo"]):
        bravo = open_site(stick.sites.homes["bravo"])
        try:
            with open_bundle(stick.genuine, identity=bravo.identity,
                             trust=bravo.trust) as bundle:
                records: list[Record] = list(bundle.records())
        finally:
            bravo.index.close()
    return next(r for r in records if isinstance(r, Change))


def _alpha_writes(stick: Stick, directory: Path, *, seq: int, ack: VersionVector,
                  records: list[Record]) -> bytes:
    directory.mkdir()
    with site_lock(stick.sites.homes["alpha"]):
        alpha = open_site(stick.sites.homes["alpha"])
        try:
            bravo_card = alpha.trust.by_name("bravo")
            assert bravo_card is not None
            written = write_bundle(
                directory, identity=alpha.identity,
                bundle_id=dataclasses.replace(stick.genuine_id, seq=seq), kind="sync",
                recipients=[bravo_card], ack=ack, assumes=VersionVector(),
                records=iter(records), created_ms=tick(), encrypt=False)
        finally:
            alpha.index.close()
    return written.paths[0].read_bytes()


def forged_header(stick: Stick, tmp_path: Path) -> bytes:
    """Alpha's header as a forger would like it: bundle 999, an acknowledgement of
    fifty changes bravo never made (which would start bravo's restore procedure)."""
    with site_lock(stick.sites.homes["bravo"]):
        bravo = open_site(stick.sites.homes["bravo"])
        ours = bravo.stream
        bravo.index.close()
    ack = VersionVector.of({**dict(stick.genuine_ack.items()),
                            Stream(ours.site, ours.incarnation): 50})
    return _unsigned(_alpha_writes(stick, tmp_path / "forged-header", seq=999, ack=ack,
                                   records=[]))


def forged_body(stick: Stick, tmp_path: Path) -> bytes:
    """The genuine header around a body holding one change stamped 2^62 ms."""
    change = _first_change(stick)
    far = dataclasses.replace(change, ts=Timestamp(FAR_FUTURE_MS, 0, change.ts.site))
    donor = _alpha_writes(stick, tmp_path / "forged-body", seq=stick.genuine_id.seq,
                          ack=stick.genuine_ack, records=[far])
    start, _ = _split(stick.genuine_bytes)
    donor_start, donor_end = _split(donor)
    body = donor[donor_start:donor_end]
    assert start + len(body) < len(stick.genuine_bytes) - 200
    spliced = stick.genuine_bytes[:start] + body + stick.genuine_bytes[start + len(body):]
    return _unsigned(spliced)


def _serving(target: Path, first: bytes, then: bytes, switch: int, scratch: Path
             ) -> Callable[[Path], int]:
    """An opener for the drop whose bundle reads as ``first`` for ``switch`` opens."""
    real = volumes_module._open_for_read
    opened = 0
    scratch.mkdir(exist_ok=True)

    def open_for_read(path: Path) -> int:
        nonlocal opened
        if Path(path) != target:
            return real(path)
        opened += 1
        served = scratch / f"read-{opened}"
        served.write_bytes(first if opened <= switch else then)
        return os.open(served, os.O_RDONLY)

    return open_for_read


def _restore(stick: Stick) -> None:
    live = stick.sites.root / "bravo"
    shutil.rmtree(live)
    shutil.copytree(stick.snapshot, live, symlinks=True)


def _imports(stick: Stick) -> Iterator[tuple[ImportResult, Site]]:
    with site_lock(stick.sites.homes["bravo"]):
        site = open_site(stick.sites.homes["bravo"])
        try:
            yield import_drop(site, stick.sites.drop, now_ms=tick()), site
        finally:
            site.index.close()


def _assert_nothing_forged(stick: Stick, result: ImportResult, site: Site,
                           incarnation: int) -> None:
    gid = stick.genuine_id
    index = site.index
    assert not index.has_received(gid.site, gid.incarnation, 999)
    assert result.new_incarnation is None
    assert site.stream.incarnation == incarnation
    assert site.clock.last.wall_ms < FAR_FUTURE_MS // 2
    saved = index.clock()
    assert saved is None or saved[0] < FAR_FUTURE_MS // 2
    peer = index.peer(gid.site)
    ack = VersionVector() if peer is None else peer.ack
    [outcome] = result.bundles
    if index.has_received(gid.site, gid.incarnation, gid.seq):
        assert outcome.status == "applied"
        assert ack == stick.genuine_ack
    else:
        assert outcome.status == "rejected"
        assert ack == VersionVector()


@pytest.mark.slow
@pytest.mark.parametrize("forgery", ["header first", "body later"])
def test_a_drop_that_reads_differently_twice_commits_nothing_forged(
        stick: Stick, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgery: str) -> None:
    if forgery == "header first":
        # Forged bytes first (a listing sees them), the genuine bundle afterwards.
        first, then = forged_header(stick, tmp_path), stick.genuine_bytes
    else:
        # The genuine bundle first (it verifies), a forged body afterwards.
        first, then = stick.genuine_bytes, forged_body(stick, tmp_path)
    with site_lock(stick.sites.homes["bravo"]):
        before = open_site(stick.sites.homes["bravo"])
        incarnation = before.stream.incarnation
        before.index.close()
    applied = 0
    for switch in SWITCH_POINTS:
        _restore(stick)
        monkeypatch.setattr(volumes_module, "_open_for_read",
                            _serving(stick.genuine, first, then, switch,
                                     tmp_path / f"served-{forgery}-{switch}"))
        for result, site in _imports(stick):
            _assert_nothing_forged(stick, result, site, incarnation)
            applied += result.bundles[0].status == "applied"
        monkeypatch.undo()
    # The genuine bundle, read whole from one content, is still applied.
    assert applied >= 1


# --- a trusted third site re-signs another site's bundle -------------------------------


def _resign_as(data: bytes, signer: SiteIdentity) -> bytes:
    """The bundle re-signed by ``signer`` under its own id (either format version)."""
    from bundlesync.format.cose import sign_digest
    from bundlesync.format.limits import END_MAGIC, MAGIC
    from bundlesync.format.volumes import VolumeHead

    stream = data[48:]
    (header_length,) = struct.unpack(">I", stream[:4])
    header = cbor2.loads(stream[4:4 + header_length])
    (cose_length,) = struct.unpack(">I", stream[-12:-8])
    rest = stream[4 + header_length:-12 - cose_length]
    header["id"][0] = bytes.fromhex(signer.site_id)
    version = 2 if "v" in header else 1
    if version == 1:
        header["origin"] = {"site": bytes.fromhex(signer.site_id), "name": signer.name,
                            "key": signer.signing_public}
    new_header = cbor2.dumps(header, canonical=True)
    new_stream = struct.pack(">I", len(new_header)) + new_header + rest
    digest = hashlib.sha256(MAGIC + struct.pack(">H", version) + new_stream).digest()
    # (A version 1 signature is made as version 1 writers made it.)
    cose = sign_digest(signer, digest) if version == 1 else sign_digest(signer, digest,
                                                                        version=version)
    new_stream += cose + struct.pack(">I", len(cose)) + END_MAGIC
    tag = hashlib.sha256(new_header).digest()[:16]
    return VolumeHead(1, 1, tag, len(new_stream), 0).pack() + new_stream


def test_a_trusted_site_cannot_pass_off_another_sites_bundle_as_its_own(
        tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.add("charlie")
    for a, b in (("alpha", "bravo"), ("alpha", "charlie"), ("bravo", "charlie")):
        sites.befriend(a, b)
    sites.export("alpha", to=["bravo"])
    [genuine] = find_bundles(sites.drop)
    with site_lock(sites.homes["charlie"]):
        charlie = open_site(sites.homes["charlie"])
        identity = charlie.identity
        charlie.index.close()
    forged_drop = tmp_path / "forged"
    forged_drop.mkdir()
    (forged_drop / "charlie_forged.bsb").write_bytes(_resign_as(genuine.read_bytes(), identity))
    result = sites.import_("bravo", forged_drop)
    [outcome] = result.bundles
    assert outcome.status == "rejected"
    assert outcome.changes == 0
    with site_lock(sites.homes["bravo"]):
        bravo = open_site(sites.homes["bravo"])
        try:
            assert bravo.index.received_from(identity.site_id) == []
        finally:
            bravo.index.close()


def test_an_exported_bundle_shows_only_what_routing_needs(tmp_path: Path) -> None:
    sites = Sites(tmp_path)
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    [bundle] = find_bundles(sites.drop)
    stream = bundle.read_bytes()[48:]
    (header_length,) = struct.unpack(">I", stream[:4])
    header = cbor2.loads(stream[4:4 + header_length])
    # No acknowledgement vectors, counts, creation time or origin name in the clear.
    assert set(header) == {"v", "id", "kind", "recipients", "enc"}
    assert b"alpha" not in stream


def test_a_far_future_stamp_is_observed_clamped(stick: Stick, tmp_path: Path) -> None:
    # A genuine, validly signed bundle of alpha's whose change is stamped 2^62 ms
    # (a broken clock, or a stolen key): the change merges, the clock stays sane.
    change = _first_change(stick)
    far = dataclasses.replace(change, ts=Timestamp(FAR_FUTURE_MS, 0, change.ts.site))
    data = _alpha_writes(stick, tmp_path / "far", seq=stick.genuine_id.seq + 1,
                         ack=stick.genuine_ack, records=[far])
    drop = tmp_path / "far-drop"
    drop.mkdir()
    (drop / "alpha_far.bsb").write_bytes(data)
    with site_lock(stick.sites.homes["bravo"]):
        site = open_site(stick.sites.homes["bravo"])
        try:
            now = tick()
            result = import_drop(site, drop, now_ms=now)
            assert [b.status for b in result.bundles] == ["applied"]
            assert site.clock.last.wall_ms <= now + MAX_AHEAD_MS
        finally:
            site.index.close()


def test_an_unsigned_file_posing_as_our_own_newer_bundle_is_no_evidence(
        tmp_path: Path) -> None:
    # A later incarnation of our own bundles in the drop means we were restored --
    # but only if we signed it. A forger's copy must not start a new incarnation.
    sites = Sites(tmp_path)
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    with site_lock(sites.homes["alpha"]):
        alpha = open_site(sites.homes["alpha"])
        try:
            bravo_card = alpha.trust.by_name("bravo")
            assert bravo_card is not None
            stream = alpha.stream
            written = write_bundle(
                tmp_path, identity=alpha.identity,
                bundle_id=BundleId(alpha.site_id, stream.incarnation + 5, 1), kind="sync",
                recipients=[bravo_card], ack=VersionVector(), assumes=VersionVector(),
                records=iter([]), created_ms=tick())
        finally:
            alpha.index.close()
    (sites.drop / written.paths[0].name).write_bytes(
        _unsigned(written.paths[0].read_bytes()))
    result = sites.import_("alpha")
    assert result.new_incarnation is None
