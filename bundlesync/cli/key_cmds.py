"""Keys over time: a new encryption key, revocation, the key file's passphrase.

The commands add to the ``key`` and ``peer`` groups of :mod:`site_cmds`; what
they do is specified in ``formats/bundle-v2.md`` §3.5-§3.7 and explained in
``docs/trust.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from bundlesync.cli.common import confirm, locked, now_ms, out_of, site_home
from bundlesync.cli.output import stdin_is_terminal
from bundlesync.cli.site_cmds import STDIO, _read_card, key, peer
from bundlesync.errors import PromptNeedsTerminal, UsageError
from bundlesync.keys import (
    MAX_STATEMENT_SIZE,
    PASSPHRASE_ENV,
    Revocation,
    SiteIdentity,
    SitePaths,
    key_file_sealed,
    load_identity,
    retire_key_file,
    save_identity,
    site_paths,
    write_file_atomically,
)

# A passphrase file holds one line; anything longer is not a passphrase file.
MAX_PASSPHRASE_FILE = 4096


def _unlock(paths: SitePaths) -> tuple[SiteIdentity, str | None]:
    """Load the identity, with the passphrase it is sealed under (None: not sealed).

    The passphrase comes from BUNDLESYNC_PASSPHRASE, else from a prompt on a
    terminal; without either, loading fails with KeyFileLocked as everywhere.
    """
    if not key_file_sealed(paths.keys):
        return load_identity(paths.keys), None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None and stdin_is_terminal():
        passphrase = click.prompt("Current passphrase of the site key", hide_input=True,
                                  err=True)
    return load_identity(paths.keys, passphrase=passphrase), passphrase


def _new_passphrase(passphrase_file: Path | None) -> str:
    if passphrase_file is not None:
        try:
            data = passphrase_file.read_bytes()[:MAX_PASSPHRASE_FILE + 1]
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the passphrase file {passphrase_file}: "
                             f"{getattr(exc, 'strerror', None) or exc}",
                             hint="Give a readable UTF-8 file holding the passphrase on its "
                                  "first line.") from None
        lines = text.splitlines()
        if len(data) > MAX_PASSPHRASE_FILE or not lines or not lines[0]:
            raise UsageError(f"the passphrase file {passphrase_file} does not hold a "
                             f"passphrase on its first line",
                             hint="Write the passphrase (not empty) on the file's first line.")
        return lines[0]
    if not stdin_is_terminal():
        raise PromptNeedsTerminal(
            "this command asks for the new passphrase -- and there is no terminal to "
            "answer on",
            hint="Pass --passphrase-file FILE (the passphrase on its first line), or "
                 "--remove to store the key without one.")
    typed: str = click.prompt("New passphrase", hide_input=True, confirmation_prompt=True,
                              err=True)
    if not typed:
        raise UsageError("an empty passphrase protects nothing",
                         hint="Choose a passphrase, or pass --remove to store the key "
                              "without one.")
    return typed


@key.command("passphrase")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the new passphrase from the first line of FILE (for scripts).")
@click.option("--remove", is_flag=True, help="Store the key without a passphrase.")
@click.pass_context
def key_passphrase(ctx: click.Context, passphrase_file: Path | None, remove: bool) -> None:
    """Set, change or remove the passphrase on this site's key file.

    The current passphrase comes from BUNDLESYNC_PASSPHRASE (or a prompt on a
    terminal); the new one from --passphrase-file (or a prompt on a terminal).
    Every later run needs the new one in BUNDLESYNC_PASSPHRASE.
    """
    out = out_of(ctx)
    if remove and passphrase_file is not None:
        raise UsageError("--remove and --passphrase-file contradict each other",
                         hint="Give one of them.")
    home = site_home(ctx)
    paths = site_paths(home)
    with locked(ctx, home):
        identity, current = _unlock(paths)
        new = None if remove else _new_passphrase(passphrase_file)
        save_identity(identity, paths.keys, overwrite=True, passphrase=new)
    out.result = {"name": identity.name, "site_id": identity.site_id,
                  "protected": new is not None, "was_protected": current is not None}
    if new is None:
        out.say("The site key is now stored without a passphrase"
                + (" (it had none)." if current is None else "."))
    else:
        out.say(f"The site key is now sealed under the new passphrase. Give it in "
                f"{PASSPHRASE_ENV} to every later run.")


@key.command("rotate-exchange")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the new card to FILE, to hand to peers.")
@click.option("--yes", is_flag=True,
              help="Do not ask for confirmation (needed without a terminal).")
@click.pass_context
def key_rotate_exchange(ctx: click.Context, out_file: Path | None, yes: bool) -> None:
    """Replace this site's encryption key; its signing key and site id stay.

    The new card is signed by the unchanged signing key: peers take it with
    'bundlesync peer update CARD' (the next export also leaves it in the drop).
    The old key file is kept under keys/retired/.
    """
    _replace_keys(
        ctx, out_file=out_file, yes=yes,
        question="Replace this site's encryption key? Peers must take the new card before "
                 "they can encrypt to it.",
        make=lambda identity: identity.with_new_exchange_key(
            created_ms=max(now_ms(), identity.created_ms + 1)),
        said="New encryption key for {name}; fingerprint {new} (was {old}).",
        next_step="Peers take it with 'bundlesync peer update CARD'; the next export leaves "
                  "it in the drop too.")


@key.command("succeed")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the new card to FILE, to hand to peers.")
@click.option("--yes", is_flag=True,
              help="Do not ask for confirmation (needed without a terminal).")
@click.pass_context
def key_succeed(ctx: click.Context, out_file: Path | None, yes: bool) -> None:
    """Replace both of this site's keys; the site id stays.

    The old signing key signs a succession statement that the new card carries:
    peers that trust the old key take the new card from the drop at their next
    import (or with 'bundlesync peer update CARD'). Not for a stolen key -- the
    thief could sign a succession too: revoke that one ('bundlesync key revoke').
    The old key file is kept under keys/retired/.
    """
    _replace_keys(
        ctx, out_file=out_file, yes=yes,
        question="Replace this site's signing and encryption keys? Peers must take the new "
                 "card before they accept its bundles.",
        make=lambda identity: identity.successor(
            created_ms=max(now_ms(), identity.created_ms + 1)),
        said="New keys for {name}, site id {site_id} unchanged; fingerprint {new} (was {old}).",
        next_step="Peers take it at their next import of a drop this site exported to, or "
                  "with 'bundlesync peer update CARD'.")


def _replace_keys(ctx: click.Context, *, out_file: Path | None, yes: bool, question: str,
                  make: Callable[[SiteIdentity], SiteIdentity], said: str,
                  next_step: str) -> None:
    """Replace this site's keys by ``make``; the old key file is kept under keys/retired/.

    Peers take a card only if it is strictly newer than the one they trust, so ``make``
    gives the new identity a later creation time.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    paths = site_paths(home)
    confirm(question, yes=yes)
    with locked(ctx, home):
        identity, passphrase = _unlock(paths)
        replaced = make(identity)
        retired = retire_key_file(paths.keys, identity)
        save_identity(replaced, paths.keys, overwrite=True, passphrase=passphrase)
    card = replaced.card()
    if out_file is not None:
        card.write(out_file)
    out.result = {"name": card.name, "site_id": card.site_id, "fingerprint": card.fingerprint,
                  "old_fingerprint": identity.fingerprint, "retired": str(retired),
                  "path": None if out_file is None else str(out_file)}
    out.say(said.format(name=card.name, site_id=card.site_id, new=card.fingerprint,
                        old=identity.fingerprint))
    if out_file is not None:
        out.say(f"Wrote the new card to {out_file}.")
    out.say(next_step)


@key.command("revoke")
@click.option("--out", "out_file", required=True,
              type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write the revocation statement to FILE ('-': stdout).")
@click.option("--yes", is_flag=True,
              help="Do not ask for confirmation (needed without a terminal).")
@click.pass_context
def key_revoke(ctx: click.Context, out_file: Path, yes: bool) -> None:
    """Revoke this site's signing key, for good (after a theft, or at its end).

    Writes the statement to FILE; every later export also leaves it in the
    drop, and each peer that imports it stops trusting this key. This site
    then needs new keys (a new site) to be trusted again.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    paths = site_paths(home)
    confirm("Revoke this site's signing key? Peers that take the statement in never "
            "trust this key again.", yes=yes)
    with locked(ctx, home):
        identity, _ = _unlock(paths)
        revocation = identity.revocation(created_ms=now_ms())
        # Remembered with the trust store's revocations, which every export carries.
        paths.trust_store().revoke(revocation)
    text = revocation.to_text()
    out.result = {"name": identity.name, "site_id": revocation.site_id,
                  "path": None if str(out_file) == STDIO else str(out_file)}
    if str(out_file) == STDIO:
        if out.json:
            out.result["revocation"] = text
        else:
            click.echo(text, nl=False)
        return
    write_file_atomically(out_file, text.encode("utf-8"), mode=0o644)
    out.say(f"Revoked the signing key of {identity.name} (site {revocation.site_id}).")
    out.say(f"  statement written to {out_file}; every export also leaves it in the drop.")
    out.say("Peers take it with 'bundlesync peer revoke FILE' or with their next import.")


@peer.command("update")
@click.argument("card", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_context
def peer_update(ctx: click.Context, card: Path) -> None:
    """Take a trusted peer's newer card ('-': stdin): a new encryption key, or new keys.

    The card must be newer than the trusted one and be signed by the signing key
    already trusted for that peer, or carry a succession that key signed; no
    fingerprint needs checking, since the trusted key vouches for it. An import
    takes such cards from the drop by itself.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    new = _read_card(card)
    with locked(ctx, home):
        old = site_paths(home).trust_store().update(new)
    out.result = {"name": old.name, "site_id": old.site_id, "fingerprint": new.fingerprint,
                  "old_fingerprint": old.fingerprint}
    if old.signing_public != new.signing_public:
        out.say(f"Peer {old.name} has new keys, which its old key vouched for; fingerprint "
                f"{new.fingerprint} (was {old.fingerprint}).")
    elif old.exchange_public == new.exchange_public:
        out.say(f"Peer {old.name}: newer card, same keys ({new.fingerprint}).")
    else:
        out.say(f"Peer {old.name} has a new encryption key; fingerprint {new.fingerprint} "
                f"(was {old.fingerprint}).")


@peer.command("revoke")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_context
def peer_revoke(ctx: click.Context, file: Path) -> None:
    """Take in a revocation statement ('-': stdin): never trust that key again.

    Only a statement signed by the revoked key itself is taken; the peer's card
    is removed and the key refused from then on, also if its card is added again.
    """
    out = out_of(ctx)
    home = site_home(ctx)
    if str(file) == STDIO:
        revocation = Revocation.from_text(sys.stdin.read(MAX_STATEMENT_SIZE),
                                          source="standard input")
    else:
        revocation = Revocation.read(file)
    store = site_paths(home).trust_store()
    known = store.is_revoked(revocation.signing_public)
    with locked(ctx, home):
        removed = None if known else store.revoke(revocation)
    out.result = {"site_id": revocation.site_id,
                  "removed": None if removed is None else removed.name,
                  "already_revoked": known}
    if known:
        out.say(f"The key of site {revocation.site_id} was already revoked.")
    elif removed is not None:
        out.say(f"Peer {removed.name} revoked its key: its card was removed, and its key "
                f"is refused from now on.")
    else:
        out.say(f"The key of site {revocation.site_id} (not a trusted peer) is revoked: it "
                f"will not be trusted.")

