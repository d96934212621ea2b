"""A peer whose clock is years ahead (or this machine's years behind) is named in a warning."""

from __future__ import annotations

from bundlesync.operations.export import export_drop
from bundlesync.operations.site import open_site, site_lock

from .conftest import Sites, tick

TEN_YEARS_MS = int(10 * 365.25 * 24 * 3600 * 1000)


def test_changes_stamped_ten_years_ahead_are_clamped_with_a_warning(sites: Sites) -> None:
    sites.add("alpha")
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.deliver("alpha", "alice@example.org", ("INBOX",), 1)
    with site_lock(sites.homes["alpha"]):
        site = open_site(sites.homes["alpha"])
        try:
            export_drop(site, sites.drop, now_ms=tick() + TEN_YEARS_MS)
        finally:
            site.index.close()
    result = sites.import_("bravo")
    warnings = [w for w in result.as_dict()["warnings"] if "ahead of this machine's clock" in w]
    assert len(warnings) == 1 and "alpha" in warnings[0] and "10.0 years" in warnings[0]
    # The mail itself is applied all the same.
    assert result.report.as_dict()["added"] == 1


def test_a_peer_with_a_sound_clock_gives_no_warning(sites: Sites) -> None:
    sites.add("alpha")
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.deliver("alpha", "alice@example.org", ("INBOX",), 1)
    sites.export("alpha")
    result = sites.import_("bravo")
    assert not [w for w in result.as_dict()["warnings"] if "clock" in w]
