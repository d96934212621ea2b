"""Helpers the command modules share: the home, the lock, prompts, filters, sizes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bundlesync.cli import output_of
from bundlesync.cli.output import Output, stdin_is_terminal
from bundlesync.errors import ConfigError, Declined, LockHeld, PromptNeedsTerminal, UsageError
from bundlesync.operations.users import UserMatcher, user_matcher

if TYPE_CHECKING:
    from bundlesync.operations.site import Site

# How often a waiting run tries the lock again.
LOCK_RETRY_SECONDS = 0.2


def now_ms() -> int:
    return int(time.time() * 1000)


def out_of(ctx: click.Context) -> Output:
    return output_of(ctx)


def home_of(ctx: click.Context) -> Path | None:
    """The --home given (before or after the command), else None for the default."""
    home = output_of(ctx).options.home
    return home if isinstance(home, Path) else None


def site_home(ctx: click.Context) -> Path:
    # The site layer (the model, the state index, the store) is loaded by a run,
    # not by --help or the completion, which need only the options.
    from bundlesync.operations.site import resolve_home  # noqa: PLC0415

    return resolve_home(home_of(ctx))


@contextlib.contextmanager
def locked(ctx: click.Context, home: Path, *, create: bool = False) -> Iterator[None]:
    """Hold the site lock, waiting up to ``--lock-wait`` seconds for another run.

    Only ``init`` (``create``) may make the home: any other command given a
    mistyped ``--home`` says there is no site there and leaves nothing behind.
    """
    if not create and not home.is_dir():
        raise ConfigError(
            f"this site has no configuration (there is no site home at {home})",
            hint="Check --home (or $BUNDLESYNC_HOME), or set a site up with 'bundlesync init'.")
    from bundlesync.operations.site import site_lock  # noqa: PLC0415 - see site_home

    deadline = time.monotonic() + output_of(ctx).options.lock_wait
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(site_lock(home))
                break
            except LockHeld as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    if output_of(ctx).options.lock_wait:
                        exc.hint = (f"It was still held after --lock-wait "
                                    f"{output_of(ctx).options.lock_wait:g} s; wait longer, "
                                    "or check that process.")
                    else:
                        exc.hint = ("Wait for the other run to finish, or pass "
                                    "--lock-wait SECONDS to wait for it.")
                    raise
                time.sleep(min(LOCK_RETRY_SECONDS, left))
        yield


def confirm(question: str, *, yes: bool) -> None:
    """Ask on a terminal; without one, refuse unless ``--yes`` (scripts never guess)."""
    if yes:
        return
    if not stdin_is_terminal():
        raise PromptNeedsTerminal(f"this command asks: {question} -- and there is no "
                                  "terminal to answer on")
    if not click.confirm(question, default=False, err=True):
        raise Declined(f"not confirmed: {question}")


def parse_size(text: str | None) -> int | None:
    if text is None:
        return None
    units = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}
    raw = text.strip().upper().removesuffix("B")
    number = raw.rstrip("KMGI")
    unit = raw[len(number):]
    try:
        value = int(float(number) * units[unit])
    except (KeyError, ValueError):
        raise UsageError(f"cannot read the size {text!r}",
                         hint="Write it like 700M, 4G or 2GiB.") from None
    if value < 1 << 20:
        raise UsageError(f"a volume of {text} is too small", hint="Use at least 1M.")
    return value


def ago(ms: int) -> str:
    seconds = max(0, (now_ms() - ms) // 1000)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


# -- filters --------------------------------------------------------------------------

_FILTER_OPTIONS = [
    click.option("--include", multiple=True, metavar="PATTERN",
                 help="Only mailboxes matching (fnmatch on 'Parent/Child'); repeatable."),
    click.option("--exclude", multiple=True, metavar="PATTERN",
                 help="Skip mailboxes matching, e.g. 'Trash' or 'Junk*'; repeatable."),
    click.option("--iinclude", multiple=True, metavar="PATTERN",
                 help="As --include, ignoring case."),
    click.option("--iexclude", multiple=True, metavar="PATTERN",
                 help="As --exclude, ignoring case ('trash' skips 'Trash')."),
]

_USER_OPTIONS = [
    click.option("-u", "--user", "users", multiple=True, metavar="MASK",
                 help="Only users matching MASK: a name, '*' and '?' patterns, or "
                      "'@domain'; repeatable (default: every user)."),
    click.option("--users-file", "users_files", multiple=True, metavar="FILE",
                 help="Only the users (or masks) listed in FILE, one per line; '-' reads "
                      "stdin; repeatable."),
]


def _stack(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


with_filters = _stack(_FILTER_OPTIONS)
with_users = _stack(_USER_OPTIONS)


def users_from(options: dict[str, Any]) -> UserMatcher:
    return user_matcher(tuple(options.get("users", ())), tuple(options.get("users_files", ())))


def configure(site: Site, options: dict[str, Any]) -> UserMatcher:
    """Apply this run's mailbox filters and user masks to the opened site."""
    matcher = users_from(options)
    config = site.config.with_filters(
        include=options.get("include", ()), exclude=options.get("exclude", ()),
        iinclude=options.get("iinclude", ()), iexclude=options.get("iexclude", ()))
    site.config = replace(config, users=matcher)
    return matcher


def scans_everything(site: Site, matcher: UserMatcher) -> bool:
    """Whether this run's scan takes in every user and mailbox (no mask, no filter):
    then ``last-scan`` says so, for the quick path of the next run (``operations.quick``)."""
    filters = site.config.filters
    return matcher.everyone and not (filters.include or filters.exclude
                                     or filters.iinclude or filters.iexclude)


def warn_unknown_users(out: Output, matcher: UserMatcher, site: Site) -> None:
    """A mask naming one exact user the site does not know is most likely a typo."""
    if matcher.everyone:
        return
    known = set(site.store.users()) | set(site.index.folder_users())
    for mask in matcher.unmatched(known):
        out.warn(f"no user {mask} in the store or the state; the mask -u {mask} chose nobody")
