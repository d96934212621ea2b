"""Site commands: init, key, peer."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

import click

from bundlesync.cli import cli
from bundlesync.cli.common import (
    confirm,
    locked,
    now_ms,
    out_of,
    site_home,
    with_filters,
)
from bundlesync.errors import UsageError
from bundlesync.format.limits import MAGIC
from bundlesync.keys import MAX_CARD_BYTES, InvalidCard, PeerCard, site_paths
from bundlesync.operations.setup import add_peer, init_site, own_card, remove_peer

STDIO = "-"

# -- init ------------------------------------------------------------------------------


@cli.command()
@click.option("--site", "name", required=True, help="This site's name (letters, digits, - _ .).")
@click.option("--store", required=True,
              help="One user's Maildir, or a template like /var/vmail/%d/%n/Maildir.")
@with_filters
@click.pass_context
def init(ctx: click.Context, name: str, store: str, include: tuple[str, ...],
         exclude: tuple[str, ...], iinclude: tuple[str, ...],
         iexclude: tuple[str, ...]) -> None:
    """Set up this site: keys, configuration, state index, inventory of the store.

    The mailbox filters given here are kept in the configuration; without any,
    every mailbox of every user takes part.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    progress = out.progress("inventory")
    users = 0

    def step(user: str) -> None:
        nonlocal users
        users += 1
        progress.step(f"user {users:,}: {user or '(store)'}")

    with locked(ctx, home, create=True):
        result = init_site(home, name=name, store_location=store, include=include,
                           exclude=exclude, iinclude=iinclude, iexclude=iexclude,
                           now_ms=now_ms(), progress=step)
    progress.finish()
    out.result = {"home": str(result.home), "name": result.name, "site_id": result.site_id,
                  "fingerprint": result.fingerprint, "users": result.scan.users,
                  "folders": result.scan.folders, "messages": result.scan.added}
    out.say(f"Site {result.name} set up in {result.home}")
    out.say(f"  fingerprint {result.fingerprint}")
    out.say(f"  inventory: {result.scan.users:,} user(s), {result.scan.folders:,} folder(s), "
            f"{result.scan.added:,} message(s)")
    out.say("Next: 'bundlesync key export CARD' and give the card to the other site.")


# -- keys and peers --------------------------------------------------------------------


@cli.group()
def key() -> None:
    """This site's key card (its public keys)."""


@key.command("show")
@click.pass_context
def key_show(ctx: click.Context) -> None:
    """Show this site's name, id and fingerprint."""
    out = out_of(ctx)
    card = own_card(site_home(ctx))
    out.result = {"name": card.name, "site_id": card.site_id, "fingerprint": card.fingerprint}
    out.say(f"{card.name}  {card.fingerprint}")


@key.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_context
def key_export(ctx: click.Context, file: Path) -> None:
    """Write this site's key card to FILE ('-': stdout), to give to a peer."""
    out = out_of(ctx)
    card = own_card(site_home(ctx))
    out.result = {"name": card.name, "site_id": card.site_id, "fingerprint": card.fingerprint,
                  "path": None if str(file) == STDIO else str(file)}
    if str(file) == STDIO:
        if out.json:
            out.result["card"] = card.to_text()
        else:
            click.echo(card.to_text(), nl=False)
        return
    card.write(file)
    out.say(f"Wrote the key card of {card.name} to {file}")
    out.say(f"  fingerprint {card.fingerprint} (the peer compares it when adding the card)")


@cli.group()
def peer() -> None:
    """The sites this site trusts."""


def _read_card(card: Path) -> PeerCard:
    """Read a card file ('-': stdin), recognising the usual mistakes first."""
    if str(card) == STDIO:
        return PeerCard.from_text(sys.stdin.read(), source="standard input")
    try:
        st = os.stat(card)
    except OSError:
        return PeerCard.read(card)  # it says what is wrong with the path
    if not stat.S_ISREG(st.st_mode):
        return PeerCard.read(card)  # refuses a FIFO or device without waiting on it
    try:
        with open(card, "rb") as handle:
            head = handle.read(len(MAGIC))
    except OSError:
        return PeerCard.read(card)  # it says what is wrong with the path
    if head == MAGIC:
        raise UsageError(
            f"{card} is a bundle, not a key card",
            hint="A key card is the small text file 'bundlesync key export' writes; an "
                 "export also leaves the sending site's card in the drop as SITE.bsc.")
    if st.st_size > MAX_CARD_BYTES:
        return PeerCard.read(card)  # refuses it as too large, without reading it
    try:
        card.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCard(
            f"{card} is not a key card (it is not text)",
            hint="Ask the peer's administrator for the card 'bundlesync key export' "
                 "writes.") from None
    return PeerCard.read(card)


@peer.command("add")
@click.argument("name")
@click.argument("card", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--yes", is_flag=True,
              help="Do not ask to confirm the fingerprint (needed without a terminal).")
@click.pass_context
def peer_add(ctx: click.Context, name: str, card: Path, yes: bool) -> None:
    """Trust the site whose key card is CARD ('-': stdin), under NAME.

    On a terminal it asks you to confirm the fingerprint; without one it refuses
    unless --yes is given.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    preview = _read_card(card)
    text = f"Card of {preview.name}, fingerprint {preview.fingerprint}"
    if yes:
        out.say(text)
    else:  # shown next to the question, which is asked on stderr
        click.echo(text, err=True)
    confirm("Does this fingerprint match the one the other site reads out to you?", yes=yes)
    with tempfile.TemporaryDirectory() as scratch:
        # add_peer reads a file; a card from stdin is written to one first.
        source = card
        if str(card) == STDIO:
            source = Path(scratch) / "card.bsc"
            preview.write(source)
        with locked(ctx, home):
            added = add_peer(home, source, name=name)
    out.result = {"name": added.name, "site_id": added.site_id,
                  "fingerprint": added.fingerprint}
    out.say(f"Peer {added.name} added. Compare the fingerprint out of band:")
    out.say(f"  {added.fingerprint}")


@peer.command("list")
@click.pass_context
def peer_list(ctx: click.Context) -> None:
    """List the trusted peers."""
    out = out_of(ctx)
    cards = sorted(site_paths(site_home(ctx)).trust_store().list(), key=lambda c: c.name)
    out.result = {"peers": [{"name": c.name, "site_id": c.site_id,
                             "fingerprint": c.fingerprint} for c in cards]}
    if not cards:
        out.say("No peers yet. Add one with 'bundlesync peer add NAME CARD'.")
    for c in cards:
        out.say(f"{c.name}  {c.fingerprint}")


@peer.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True,
              help="Do not ask for confirmation (needed without a terminal).")
@click.pass_context
def peer_remove(ctx: click.Context, name: str, yes: bool) -> None:
    """Stop trusting NAME: its bundles are refused from now on."""
    out = out_of(ctx)
    home = site_home(ctx)
    confirm(f"Remove the peer {name}? Its bundles will be refused.", yes=yes)
    with locked(ctx, home):
        card = remove_peer(home, name)
    out.result = {"name": card.name, "site_id": card.site_id, "fingerprint": card.fingerprint}
    out.say(f"Peer {card.name} removed ({card.fingerprint}).")
