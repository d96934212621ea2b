"""The writer: atomic output, argument checks, counts, record validation, progress."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundlesync.core.model import (
    Body,
    Change,
    Dot,
    MailboxCreated,
    MailboxRef,
    Record,
    Timestamp,
    VersionVector,
)
from bundlesync.errors import UsageError
from bundlesync.format import (
    BundleId,
    BundleWriteFailed,
    CountMismatch,
    DropUnreadable,
    RecordNotEncodable,
    find_bundles,
    open_bundle,
    write_bundle,
)
from bundlesync.format.limits import Limits
from bundlesync.format.volumes import (
    automatic_volume_size,
    bundle_stem,
    filesystem_type,
    is_first_volume_name,
)
from bundlesync.keys import PeerCard
from tests.format.helpers import A, B, trust


def body(data: bytes) -> Body:
    return Body(hashlib.sha256(data).hexdigest(), data)


def created(counter: int, name: str = "INBOX") -> Change:
    return Change(Dot(A.site_id, 1, counter), Timestamp(counter, 0, A.site_id),
                  MailboxCreated(MailboxRef("u", "ab" * 16), None, name, 1))


def write(directory: Path, records: Iterator[Record] | list[Record], **options: object
          ) -> Path:
    arguments: dict[str, object] = {
        "identity": A, "bundle_id": BundleId(A.site_id, 1, 1), "kind": "sync",
        "recipients": [B.card()], "ack": VersionVector(), "assumes": VersionVector(),
        "records": iter(records), "created_ms": 0}
    arguments.update(options)
    return write_bundle(directory, **arguments).paths[0]  # type: ignore[arg-type]


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def failing_records() -> Iterator[Record]:
    yield created(1)
    yield body(b"x" * 10_000)
    raise RuntimeError("the store went away")


@pytest.mark.parametrize("counts", [None, {"body": 1, "mailbox-created": 1}])
def test_an_interrupted_write_leaves_nothing_behind(tmp_path: Path,
                                                    counts: dict[str, int] | None) -> None:
    with pytest.raises(RuntimeError, match="went away"):
        write(tmp_path, failing_records(), counts=counts, max_volume_size=2048)
    assert names(tmp_path) == []


def test_temporary_files_are_never_listed_as_bundles(tmp_path: Path) -> None:
    good = write(tmp_path, [created(1)])
    (tmp_path / f".{good.name}.1.abcd1234.tmp").write_bytes(good.read_bytes()[:100])
    (tmp_path / ".x.spool.0000.tmp").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hi")
    assert find_bundles(tmp_path) == [good]
    assert is_first_volume_name("a.part1of3.bsb")
    assert not is_first_volume_name("a.part2of3.bsb")
    assert not is_first_volume_name(".a.bsb")
    assert not is_first_volume_name("a.bsb.1.abcd.tmp")


def test_find_bundles_sorts_naturally_and_reports_a_missing_drop(tmp_path: Path) -> None:
    for seq in (10, 9, 100):
        write(tmp_path, [], bundle_id=BundleId(A.site_id, 1, seq), encrypt=False)
    assert [p.name.split("_")[2] for p in find_bundles(tmp_path)] == [
        "1-000009", "1-000010", "1-000100"]
    with pytest.raises(DropUnreadable):
        find_bundles(tmp_path / "nope")


def test_announced_counts_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CountMismatch):
        write(tmp_path, [created(1), created(2)], counts={"mailbox-created": 1})
    with pytest.raises(CountMismatch):
        write(tmp_path, [created(1)], counts={"mailbox-created": 2})
    assert names(tmp_path) == []


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (Body("00" * 32, b"not that"), "does not hash"),
        (Body("AB" * 32, b""), "lowercase hex"),
        (Change(Dot("xyz", 1, 1), Timestamp(0, 0, A.site_id),
                MailboxCreated(MailboxRef("u", "ab" * 16), None, "n", 1)), "site id"),
        (Change(Dot(A.site_id, -1, 1), Timestamp(0, 0, A.site_id),
                MailboxCreated(MailboxRef("u", "ab" * 16), None, "n", 1)), "incarnation"),
        (Change(Dot(A.site_id, 1, 1), Timestamp(0, 0, A.site_id),
                MailboxCreated(MailboxRef("u", "ab" * 16), None, "n", 2**32)), "UIDVALIDITY"),
        (Change(Dot(A.site_id, 1, 1), Timestamp(0, 0, A.site_id),
                MailboxCreated(MailboxRef("u", "AB" * 16), None, "n", 1)), "mailbox GUID"),
        (Change(Dot(A.site_id, 1, 1), Timestamp(0, 0, A.site_id),
                MailboxCreated(MailboxRef("u\udcff", "ab" * 16), None, "n", 1)), "Unicode"),
        (Change(Dot(A.site_id, 1, 1), Timestamp(0, 0, A.site_id),
                MailboxCreated(MailboxRef("u" * 5000, "ab" * 16), None, "n", 1)), "limit"),
        ("not a record", "not a record"),
    ],
)
def test_records_the_format_cannot_carry_are_refused(tmp_path: Path, record: Record,
                                                     message: str) -> None:
    with pytest.raises(RecordNotEncodable, match=message):
        write(tmp_path, [record])
    assert names(tmp_path) == []


def test_a_body_over_the_limit_is_refused_by_the_writer(tmp_path: Path) -> None:
    limits = Limits(max_body=1000)
    with pytest.raises(RecordNotEncodable, match="limit"):
        write(tmp_path, [body(b"x" * 1001)], limits=limits)


def test_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="recipient"):
        write(tmp_path, [], recipients=[])
    with pytest.raises(UsageError, match="too small"):
        write(tmp_path, [], max_volume_size=100)
    with pytest.raises(ValueError, match="not this site"):
        write(tmp_path, [], bundle_id=BundleId(B.site_id, 1, 1))
    with pytest.raises(ValueError, match="kind"):
        write(tmp_path, [], kind="party")
    with pytest.raises(DropUnreadable):
        write(tmp_path / "missing", [])
    assert names(tmp_path) == []


def test_the_header_must_fit_the_first_volume(tmp_path: Path) -> None:
    # 60 recipients take about 1 kB of header: more than a 1024-byte volume holds.
    many = [PeerCard(name=f"peer{i}", signing_public=hashlib.sha256(b"s%d" % i).digest(),
                     exchange_public=B.exchange_public) for i in range(60)]
    with pytest.raises(UsageError, match="cannot hold"):
        write(tmp_path, [], recipients=many, encrypt=False, max_volume_size=1024)


def test_progress_grows_to_the_bytes_written(tmp_path: Path) -> None:
    seen: list[int] = []
    data = os.urandom(200_000)
    path = write(tmp_path, [body(data)], progress=seen.append, frame_size=16384,
                 counts={"body": 1})
    assert seen == sorted(seen)
    assert seen[-1] == path.stat().st_size
    spooled: list[int] = []
    (tmp_path / "spooled").mkdir()
    write(tmp_path / "spooled", [body(data)], progress=spooled.append, frame_size=16384)
    assert spooled == sorted(spooled)
    assert spooled[-1] > path.stat().st_size  # the spool was written too


def test_a_full_drop_is_reported_and_cleaned(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = {"n": 0}

    def full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(BundleWriteFailed, match="full") as caught:
        write(tmp_path, [body(os.urandom(50_000))], frame_size=4096)
    assert "Free space" in caught.value.hint
    monkeypatch.undo()
    assert names(tmp_path) == []


def test_an_existing_bundle_of_the_same_name_is_replaced_atomically(tmp_path: Path) -> None:
    first = write(tmp_path, [created(1)])
    second = write(tmp_path, [created(1), created(2)])
    assert first == second
    with open_bundle(second, identity=B, trust=trust(A)) as bundle:
        assert len(list(bundle.records())) == 2


def test_file_names_say_who_and_what(tmp_path: Path) -> None:
    stem = bundle_stem(origin_name="ship", origin_site="0123456789abcdef" * 2, incarnation=2,
                       seq=42, kind="sync", recipients=("aa" * 16,))
    assert stem == "ship_01234567_2-000042_to_aaaaaaaa"
    many = tuple(f"{i:02x}" * 16 for i in range(5))
    assert bundle_stem(origin_name="s", origin_site="0" * 32, incarnation=1, seq=1,
                       kind="sync", recipients=many).endswith("_to_5-sites")
    assert bundle_stem(origin_name="s", origin_site="0" * 32, incarnation=1, seq=1,
                       kind="archive", recipients=()).endswith("_archive")
    assert bundle_stem(origin_name="s", origin_site="0" * 32, incarnation=1, seq=1,
                       kind="sync", recipients=()).endswith("_to_any")


MOUNTS = """\
sysfs /sys sysfs rw 0 0
/dev/sda1 / ext4 rw 0 0
/dev/sdb1 /media/USB\\040STICK vfat rw,uid=1000 0 0
/dev/sdc1 /media/big exfat rw 0 0
/dev/sdd1 /media/big/inner msdos rw 0 0
"""


def test_fat_drops_are_detected_from_the_mount_table(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert filesystem_type(Path("/media/USB STICK/drop"), mounts=mounts) == "vfat"
    assert filesystem_type(Path("/media/big/x"), mounts=mounts) == "exfat"
    assert filesystem_type(Path("/media/big/inner"), mounts=mounts) == "msdos"
    assert filesystem_type(Path("/home"), mounts=mounts) == "ext4"
    assert automatic_volume_size(Path("/media/USB STICK"), mounts=mounts) == 4 * 1024**3 - 1
    assert automatic_volume_size(Path("/media/big"), mounts=mounts) is None
    assert automatic_volume_size(Path("/"), mounts=tmp_path / "no-such-file") is None
