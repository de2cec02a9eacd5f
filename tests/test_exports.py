"""The public API is exactly what `__all__` says, kept sorted."""

from __future__ import annotations

import tenantguard


def test_all_is_sorted() -> None:
    assert tenantguard.__all__ == sorted(tenantguard.__all__)


def test_all_matches_the_public_names() -> None:
    """Every public attribute is exported, and every export exists."""
    public = {
        name
        for name in dir(tenantguard)
        if not name.startswith("_")
        and not isinstance(getattr(tenantguard, name), type(tenantguard))
    }
    assert public | {"__version__"} == set(tenantguard.__all__)
