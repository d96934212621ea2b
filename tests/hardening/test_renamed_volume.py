"""A bundle renamed on the stick (``junk.bsb``) is one bundle: applied once, never rejected."""

from __future__ import annotations

import shutil

from tests.operations.conftest import Sites


def test_a_renamed_copy_beside_the_original_is_already_applied_not_rejected(
        sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    original = next(sites.drop.glob("alpha*.bsb"))
    shutil.copy(original, sites.drop / "junk.bsb")
    first = sites.import_("bravo")
    statuses = sorted(b.status for b in first.bundles)
    assert statuses == ["already applied", "applied"], [b.as_dict() for b in first.bundles]
    assert first.rejected == []
    assert sites.digest("bravo") == sites.digest("alpha")


def test_a_bundle_known_only_under_another_name_is_applied(sites: Sites) -> None:
    sites.add("alpha", populate_per_folder=1)
    sites.add("bravo")
    sites.befriend("alpha", "bravo")
    sites.export("alpha")
    original = next(sites.drop.glob("alpha*.bsb"))
    original.rename(sites.drop / "junk.bsb")
    result = sites.import_("bravo")
    assert [b.status for b in result.bundles] == ["applied"]
    assert sites.digest("bravo") == sites.digest("alpha")
