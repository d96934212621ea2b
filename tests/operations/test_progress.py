"""Progress lines: counts, rate and ETA on a terminal, silence elsewhere."""

from __future__ import annotations

import io

from bundlesync.cli.progress import Progress, human_bytes


def test_counted_work_shows_share_rate_and_eta() -> None:
    out = io.StringIO()
    progress = Progress("import", stream=out, enabled=True)
    progress.items("messages applied", 250, 1000)
    progress.items("messages applied", 1000, 1000)
    progress.finish()
    text = out.getvalue()
    assert "messages applied 1,000/1,000 (100%)" in text
    assert "/s" in text
    assert "ETA" in text


def test_bytes_written_are_shown_with_their_rate() -> None:
    out = io.StringIO()
    progress = Progress("export", stream=out, enabled=True)
    progress.bytes(5 * 1024 * 1024)
    progress.finish()
    assert "5.0 MiB written at" in out.getvalue()


def test_nothing_is_drawn_when_not_on_a_terminal() -> None:
    out = io.StringIO()  # not a tty
    progress = Progress("import", stream=out)
    progress.items("messages applied", 1, 2)
    progress.finish()
    assert out.getvalue() == ""


def test_human_bytes() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1_536) == "1.5 KiB"
    assert human_bytes(2_300_000_000) == "2.1 GiB"
