"""Bundle format throughput: write, and read + verify, plain and encrypted bundles.

    python3 benchmarks/format_throughput.py [--size-mb N] [--json] [--dir DIR]

Generates N MB (default 256) of mail-like message bodies -- header blocks, text
of a Zipf-like vocabulary, and for about a third of the messages base64
attachments of random bytes -- deterministically from a seed, and measures on
one core (the format code is single-threaded):

* write: ``write_bundle`` with the counts given (one pass) and without them
  (the body spooled next to the bundle, as an export does it);
* read + verify: ``open_bundle`` (every signed byte hashed, the signature
  checked) and every record read (decrypted, decompressed, decoded, each
  message body's SHA-256 checked).

Throughput is megabytes (10^6 bytes) of message bodies per second, of wall time
and of the process's CPU time (steadier on a shared machine); each case runs
``--repeat`` times and the fastest run counts. The time to generate the
messages is measured alone and subtracted from the write times.
Reads come from the page cache (the bundle was just written), as in an import
right after a copy to disk.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundlesync.core.model import (
    Body,
    Change,
    Dot,
    MailboxRef,
    MessageAdded,
    MessageRef,
    Record,
    Timestamp,
    VersionVector,
)
from bundlesync.format import BundleId, open_bundle, write_bundle
from bundlesync.format.records import RECORD_KINDS
from bundlesync.keys import SiteIdentity, TrustedCards

MB = 1_000_000
_VOCABULARY = (
    "the of and to a in is that for it as was with be by on not this are or from at which "
    "but have an they you were her she there one all we their has would when if so will can "
    "more about out up them what some time could into only other new then than two may do "
    "first any like now such these over also most after should through made where very well "
    "please thanks regards attached meeting server report invoice project update schedule "
    "review draft budget question answer agenda minutes deadline customer order delivery "
    "contract team week month today tomorrow backup mailbox folder network storage policy "
    "account password release version change request ticket issue plan figure summary data "
    "results ship station supply weather crew logistics satellite window shift transfer Grüße "
    "Rückmeldung Besprechung Übersicht Änderung Größe Prüfung Lösung Angebot Rechnung Termin"
)
_WORDS = _VOCABULARY.split()


def _site(name: str) -> SiteIdentity:
    return SiteIdentity(name=name,
                        signing_secret=hashlib.sha256(f"bench {name} s".encode()).digest(),
                        exchange_secret=hashlib.sha256(f"bench {name} x".encode()).digest())


class MailSource:
    """Deterministic mail-like messages; slices of pools keep generation cheap."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        # Zipf-like word frequencies: the n-th word is chosen with weight 1/n.
        weights = [1 / (n + 1) for n in range(len(_WORDS))]
        text_words = rng.choices(_WORDS, weights=weights, k=1_500_000)
        lines = [" ".join(text_words[i:i + 12]) for i in range(0, len(text_words), 12)]
        self.text = ("\n".join(lines) + "\n").encode("utf-8")  # ~10 MB
        raw = base64.encodebytes(rng.randbytes(24 * MB))  # 76-column lines, ~32 MB
        self.attachments = raw
        self.seed = seed

    def messages(self, total: int) -> Iterator[bytes]:
        """Messages until ``total`` bytes of bodies were produced."""
        rng = random.Random(self.seed + 1)
        produced = 0
        number = 0
        while produced < total:
            number += 1
            text_size = int(2 ** rng.uniform(10, 15))  # 1-32 KiB of text
            start = rng.randrange(len(self.text) - text_size)
            text = self.text[start:start + text_size]
            headers = (
                f"Received: from mx{number % 7}.example.org by mail.example.net; "
                f"{number} +0000\n"
                f"From: user{rng.randrange(5000)}@example.org\n"
                f"To: user{rng.randrange(5000)}@example.net\n"
                f"Subject: report {number} {rng.choice(_WORDS)} {rng.choice(_WORDS)}\n"
                f"Message-ID: <{number}.{rng.getrandbits(64):016x}@example.org>\n"
                f"Date: {number}\nMIME-Version: 1.0\n"
            ).encode()
            if rng.random() < 0.35:
                size = int(2 ** rng.uniform(13, 20.5))  # 8 KiB - 1.4 MiB of base64
                at = rng.randrange(len(self.attachments) - size)
                at -= at % 77  # start on a line
                attachment = self.attachments[at:at + size]
                message = b"".join((
                    headers, b"Content-Type: multipart/mixed; boundary=b\n\n--b\n",
                    b"Content-Type: text/plain; charset=utf-8\n\n", text, b"\n--b\n",
                    b"Content-Type: application/octet-stream\n"
                    b"Content-Transfer-Encoding: base64\n\n", attachment, b"--b--\n"))
            else:
                message = headers + b"Content-Type: text/plain; charset=utf-8\n\n" + text
            produced += len(message)
            yield message


def records_of(messages: Iterator[bytes], origin: SiteIdentity) -> Iterator[Record]:
    """A Body and a MessageAdded per message, as an export sends new mail."""
    mailbox = MailboxRef("bench@example.org", "ab" * 16)
    for counter, data in enumerate(messages, start=1):
        digest = hashlib.sha256(data).hexdigest()
        yield Body(digest, data)
        yield Change(Dot(origin.site_id, 1, counter), Timestamp(counter, 0, origin.site_id),
                     MessageAdded(MessageRef(mailbox, f"{counter}.bench", digest), len(data),
                                  1_700_000_000 + counter, frozenset({"\\Seen"})))


@dataclass(slots=True)
class Result:
    case: str
    message_mb: float
    bundle_mb: float
    seconds: float
    cpu_seconds: float
    mb_per_s: float
    cpu_mb_per_s: float


class _Clock:
    """Wall and CPU time of a block; the CPU time shows the work on a busy machine."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run(size_mb: int, workdir: Path, repeat: int = 1) -> tuple[list[Result], dict[str, object]]:
    origin, target = _site("bench-a"), _site("bench-b")
    source = MailSource()
    total = size_mb * MB

    def generate() -> tuple[int, int]:
        size = number = 0
        for record in records_of(source.messages(total), origin):
            if isinstance(record, Body):
                size += len(record.data)
                number += 1
        return size, number

    with _Clock() as generation:
        message_bytes, count = generate()
    counts = dict.fromkeys(RECORD_KINDS, 0)
    counts["body"] = counts["message-added"] = count

    def result(case: str, bundle_size: int, clocks: list[_Clock], *, minus: _Clock | None
               ) -> Result:
        best = min(clocks, key=lambda c: c.wall)
        wall = best.wall - (minus.wall if minus else 0)
        cpu = best.cpu - (minus.cpu if minus else 0)
        mb = message_bytes / MB
        return Result(case, mb, bundle_size / MB, wall, cpu, mb / wall, mb / cpu)

    results: list[Result] = []
    for encrypt in (False, True):
        label = "encrypted" if encrypt else "plain"
        for spool in (False, True):
            writes: list[_Clock] = []
            reads: list[_Clock] = []
            size = 0
            for attempt in range(repeat):
                drop = workdir / f"{label}-{'spool' if spool else 'direct'}-{attempt}"
                drop.mkdir()
                with _Clock() as clock:
                    written = write_bundle(
                        drop, identity=origin, bundle_id=BundleId(origin.site_id, 1, 1),
                        kind="sync", recipients=[target.card()], ack=VersionVector(),
                        assumes=VersionVector(),
                        records=records_of(source.messages(total), origin), created_ms=0,
                        encrypt=encrypt, counts=None if spool else counts)
                writes.append(clock)
                size = written.size
                if not spool:
                    with _Clock() as clock:
                        read = 0
                        with open_bundle(written.paths[0], identity=target,
                                         trust=TrustedCards([origin.card()])) as bundle:
                            for record in bundle.records():
                                if isinstance(record, Body):
                                    read += len(record.data)
                    assert read == message_bytes
                    reads.append(clock)
                shutil.rmtree(drop)
            how = "spooled" if spool else "counts given"
            results.append(result(f"write {label} ({how})", size, writes, minus=generation))
            if reads:
                results.append(result(f"read + verify {label}", size, reads, minus=None))
    info: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "messages": count,
        "message_mb": round(message_bytes / MB, 1),
        "generation_seconds": round(generation.wall, 2),
        "repeat": repeat,
    }
    return results, info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(results: list[Result], info: dict[str, object]) -> str:
    lines = [
        f"Date {info['date']}; {info['nproc']} CPUs (`nproc`), {info['cpu']}; "
        f"Python {info['python']}; {info['messages']:,} messages, "
        f"{info['message_mb']} MB of message bodies; best of {info['repeat']}.",
        "",
        "| case | messages (MB) | bundle (MB) | seconds | MB/s | MB/s of CPU time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.case} | {r.message_mb:,.0f} | {r.bundle_mb:,.0f} | {r.seconds:.2f} | "
              f"{r.mb_per_s:,.0f} | {r.cpu_mb_per_s:,.0f} |" for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256,
                        help="megabytes of message bodies per bundle (default 256)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs per case; the fastest counts (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write the bundles (default: a temporary directory)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="format-throughput-", dir=args.dir))
    try:
        results, info = run(args.size_mb, workdir, args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"machine": info, "results": [asdict(r) for r in results]}, indent=2))
    else:
        print(table(results, info))


if __name__ == "__main__":
    main()
