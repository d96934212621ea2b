"""Bundle commands: ``inspect`` (what is in a bundle) and ``verify`` (is it good).

Both use the site's identity and trust store when there is a site (``--home``,
``$BUNDLESYNC_HOME`` or the per-user default) and the cards given with
``--trust CARD``, so a bundle can be checked on a machine that is not a site.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bundlesync.cli import cli
from bundlesync.cli.common import home_of, out_of
from bundlesync.cli.output import error_code
from bundlesync.cli.progress import human_bytes
from bundlesync.core.model import (
    Body,
    Change,
    FlagsChanged,
    MailboxRef,
    MessageAdded,
    MessageExpunged,
    Operation,
    VersionVector,
)
from bundlesync.errors import BundleRejected, UsageError
from bundlesync.format import (
    RECORD_KINDS,
    BundleHeader,
    BundleListing,
    NotARecipient,
    OpenBundle,
    VerifiedBundle,
    list_bundle,
    record_kind,
    verify_bundle,
)
from bundlesync.format.records import OPTIONAL_KINDS
from bundlesync.keys import (
    KeyMissing,
    PeerCard,
    SiteIdentity,
    TrustedCards,
    fingerprint_of,
    load_identity,
    site_paths,
)


@dataclass(slots=True)
class _Site:
    identity: SiteIdentity | None
    trust: TrustedCards

    def name_of(self, site_id: str) -> str | None:
        if self.identity is not None and self.identity.site_id == site_id:
            return self.identity.name
        card = self.trust.by_site_id(site_id)
        return None if card is None else card.name

    def label_of(self, site_id: str) -> str | None:
        """The name for people: this site's own is marked as such."""
        name = self.name_of(site_id)
        if self.identity is not None and self.identity.site_id == site_id:
            return f"{name} (this site)"
        return name


def _site(ctx: click.Context, cards: tuple[Path, ...]) -> _Site:
    paths = site_paths(home_of(ctx))
    try:
        identity: SiteIdentity | None = load_identity(paths.keys)
    except KeyMissing:
        identity = None  # not a site: verify against --trust cards only
    trusted: list[PeerCard] = list(paths.trust_store().list())
    trusted.extend(PeerCard.read(card) for card in cards)
    return _Site(identity=identity, trust=TrustedCards(trusted))


@dataclass(slots=True)
class _BodyStats:
    records: Counter[str] = field(default_factory=Counter)
    body_bytes: int = 0
    users: set[str] = field(default_factory=set)
    mailboxes: set[tuple[str, str]] = field(default_factory=set)
    content_size: int = 0


def _mailbox_of(op: Operation) -> MailboxRef:
    if isinstance(op, MessageAdded | MessageExpunged | FlagsChanged):
        return op.message.mailbox
    return op.mailbox


def _read_body(bundle: OpenBundle) -> _BodyStats:
    stats = _BodyStats()
    for record in bundle.records():
        if isinstance(record, Body):
            stats.records["body"] += 1
            stats.body_bytes += len(record.data)
            continue
        assert isinstance(record, Change)
        stats.records[record_kind(record)] += 1
        mailbox = _mailbox_of(record.op)
        stats.users.add(mailbox.user)
        stats.mailboxes.add((mailbox.user, mailbox.guid))
    stats.content_size = bundle.content_size
    return stats


def _when(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms after the epoch"


def _vv(vv: VersionVector) -> list[dict[str, Any]]:
    return [{"site": s.site, "incarnation": s.incarnation, "counter": n}
            for s, n in vv.entries]


@dataclass(slots=True)
class _Report:
    path: Path
    header: BundleHeader
    verified: VerifiedBundle | None = None
    error: BundleRejected | None = None
    readable: bool = False
    unreadable_reason: str | None = None
    body: _BodyStats | None = None
    # A version 2 bundle this site could not open: only its clear header is known.
    sealed: bool = False


def _sealed_header(listing: BundleListing) -> BundleHeader:
    """What a version 2 bundle shows without its inner header (bundle-v2 §4.1)."""
    return BundleHeader(
        bundle_id=listing.bundle_id, created_ms=0, kind=listing.kind,
        origin_site=listing.origin_site, origin_name="", origin_key=b"",
        recipients=listing.recipients, ack=VersionVector(), assumes=VersionVector(),
        counts=dict.fromkeys(RECORD_KINDS, 0), frame_size=0, format_version=2,
        sealed=listing.encrypted)


def _examine(path: Path, site: _Site) -> _Report:
    listing = list_bundle(path)
    header = listing.header if listing.header is not None else _sealed_header(listing)
    report = _Report(path=path, header=header, sealed=listing.header is None)
    try:
        report.verified = verify_bundle(path, trust=site.trust, identity=site.identity)
    except BundleRejected as exc:
        report.error = exc
        return report
    try:
        with OpenBundle.from_verified(report.verified, identity=site.identity) as bundle:
            report.header, report.sealed = bundle.header, False
            report.body = _read_body(bundle)
        report.readable = True
    except NotARecipient as exc:
        report.unreadable_reason = exc.message
    except BundleRejected as exc:
        report.error = exc
    return report


def _as_json(report: _Report, site: _Site) -> dict[str, Any]:
    h = report.header
    v = report.verified
    data: dict[str, Any] = {
        "path": report.path.name,
        "bundle_id": {"site": h.bundle_id.site, "incarnation": h.bundle_id.incarnation,
                      "seq": h.bundle_id.seq},
        "kind": h.kind,
        "created_ms": h.created_ms,
        "created": _when(h.created_ms),
        "origin": {"site": h.origin_site, "name": h.origin_name,
                   "fingerprint": fingerprint_of(h.origin_site)},
        "recipients": [{"site": r, "name": site.name_of(r),
                        "this_site": site.identity is not None and r == site.identity.site_id}
                       for r in h.recipients],
        "encrypted": h.encrypted,
        "ack": _vv(h.ack),
        "assumes": _vv(h.assumes),
        "counts": dict(h.counts),
        "frame_size": h.frame_size,
        "signature": {
            "status": "valid" if v is not None else "not verified",
            "signer": None if v is None else {"name": v.signer.name,
                                              "fingerprint": v.signer.fingerprint},
            "error": None if report.error is None else error_code(type(report.error).__name__),
            "message": None if report.error is None else report.error.message,
        },
        "format_version": h.format_version,
        "sealed": report.sealed,
    }
    if report.sealed:
        # A version 2 header this site could not open: these are not known here.
        data |= {"created_ms": None, "created": None, "ack": None, "assumes": None,
                 "counts": None, "frame_size": None}
        data["origin"]["name"] = site.name_of(h.origin_site)
    if v is not None:
        data["size"] = v.size
        data["volumes"] = [p.name for p in v.paths]
        data["body_size"] = v.body_size
    data["body"] = None
    if report.body is not None and v is not None:
        b = report.body
        data["body"] = {
            "records": {k: b.records.get(k, 0) for k in RECORD_KINDS
                        if k not in OPTIONAL_KINDS or b.records.get(k, 0)},
            "content_size": b.content_size,
            "compression_ratio": round(b.content_size / v.body_size, 3) if v.body_size else None,
            "message_bytes": b.body_bytes,
            "users": len(b.users),
            "mailboxes": len(b.mailboxes),
        }
    elif report.unreadable_reason is not None:
        data["body_unreadable"] = report.unreadable_reason
    return data


def _print_human(report: _Report, site: _Site) -> None:
    h = report.header
    v = report.verified
    echo = out_of(click.get_current_context()).say
    if v is not None:
        volumes = len(v.paths)
        size = f"{volumes} volume{'s' if volumes > 1 else ''}, {human_bytes(v.size)}"
        echo(f"Bundle       {report.path.name} ({size})")
    else:
        echo(f"Bundle       {report.path.name}")
    echo(f"Kind         {h.kind}: bundle {h.bundle_id.seq} of incarnation "
         f"{h.bundle_id.incarnation}")
    if not report.sealed:
        echo(f"Created      {_when(h.created_ms)}")
    origin = site.name_of(h.origin_site) if report.sealed else h.origin_name
    echo(f"Origin       {origin or 'unknown site'}  [{fingerprint_of(h.origin_site)}]")
    if v is not None:
        echo(f"Signature    valid: signed by {v.signer.name}, a trusted key")
    else:
        assert report.error is not None
        echo(f"Signature    NOT VERIFIED ({type(report.error).__name__}): "
             f"{report.error.message}")
        echo("             Everything below comes from the unverified header.")
    if h.recipients:
        names = [f"{site.label_of(r) or 'unknown site'} [{fingerprint_of(r)}]"
                 for r in h.recipients]
        echo(f"Recipients   {names[0]}")
        for name in names[1:]:
            echo(f"             {name}")
    else:
        echo("Recipients   any site")
    if h.encrypted:
        if report.readable:
            echo("Encrypted    yes; this site can decrypt it")
        else:
            echo("Encrypted    yes; this site cannot decrypt it")
    else:
        echo("Encrypted    no (anyone holding the file can read the mail in it)")
    if report.sealed:
        echo("Sealed       origin name, time, acknowledgement and counts are readable only "
             "by the recipients")
        if report.unreadable_reason is not None:
            echo(f"Body         not shown: {report.unreadable_reason}")
        return
    changes = sum(n for k, n in h.counts.items() if k not in ("body", "want"))
    wants = h.counts.get("want", 0)
    echo(f"Records      {changes:,} changes, {h.counts['body']:,} message bodies"
         + (f", {wants:,} bodies asked for" if wants else ""))
    for kind in RECORD_KINDS:
        if h.counts.get(kind, 0):
            echo(f"               {kind:<18}{h.counts[kind]:>12,}")
    echo(f"Acknowledges {_vv_text(h.ack, site)}")
    echo(f"Assumes      {_vv_text(h.assumes, site)}")
    if report.body is not None and v is not None:
        b = report.body
        ratio = f", {b.content_size / v.body_size:.1f}:1" if v.body_size else ""
        echo(f"Body         {human_bytes(v.body_size)} on disk, "
             f"{human_bytes(b.content_size)} of records{ratio}; "
             f"{human_bytes(b.body_bytes)} of messages")
        echo(f"Contents     {len(b.users):,} users, {len(b.mailboxes):,} mailboxes "
             f"(every record decoded and checked)")
    elif report.unreadable_reason is not None:
        echo(f"Body         not shown: {report.unreadable_reason}")


def _vv_text(vv: VersionVector, site: _Site) -> str:
    if not vv:
        return "nothing"
    parts = []
    for stream, count in vv.entries:
        who = site.label_of(stream.site) or stream.site[:8]
        parts.append(f"{who} incarnation {stream.incarnation} changes 1..{count}")
    return ", ".join(parts)


_bundle_arg = click.argument("bundle", type=click.Path(path_type=Path))


def _not_a_directory(bundle: Path) -> None:
    if bundle.is_dir():
        raise UsageError(f"{bundle} is a directory (a drop), not a bundle",
                         hint=f"'bundlesync list {bundle}' lists the bundles in a drop; "
                              "inspect or verify one of its .bsb files.")
_trust_opt = click.option(
    "--trust", "cards", multiple=True, metavar="CARD",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also trust the site whose card is CARD (repeatable); works without a site.")


@cli.command()
@_bundle_arg
@_trust_opt
@click.pass_context
def inspect(ctx: click.Context, bundle: Path, cards: tuple[Path, ...]) -> None:
    """Show what BUNDLE holds: origin, signature, recipients, counts, sizes.

    The body is read (and summarised) only if this site can decrypt it. Exits
    with code 3 if the bundle is not intact or not signed by a trusted key.
    """
    _not_a_directory(bundle)
    out = out_of(ctx)
    site = _site(ctx, cards)
    report = _examine(bundle, site)
    out.result = _as_json(report, site)
    if not out.json:
        _print_human(report, site)
    if report.error is not None:
        raise report.error


@cli.command()
@_bundle_arg
@_trust_opt
@click.pass_context
def verify(ctx: click.Context, bundle: Path, cards: tuple[Path, ...]) -> None:
    """Check BUNDLE: intact and signed by a trusted key (exit 0), else exit 3.

    Where this site can read the body, every record is decoded and checked too.
    """
    _not_a_directory(bundle)
    out = out_of(ctx)
    site = _site(ctx, cards)
    report = _examine(bundle, site)
    if report.error is not None:
        raise report.error
    assert report.verified is not None
    signer = report.verified.signer
    out.result = {"bundle": bundle.name, "valid": True,
                  "signer": {"name": signer.name, "fingerprint": signer.fingerprint},
                  "body_checked": report.body is not None,
                  "records": None if report.body is None else sum(report.body.records.values())}
    out.say(f"OK: {bundle.name} is intact and signed by {signer.name} "
               f"[{signer.fingerprint}].")
    if report.body is not None:
        total = sum(report.body.records.values())
        out.say(f"Body checked: {total:,} records decoded, every message body matches "
                   f"its SHA-256.")
    else:
        out.say(f"Body not checked: {report.unreadable_reason}")
