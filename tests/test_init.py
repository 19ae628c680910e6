"""The public API: lazy imports stay in sync with __all__ (a place that drifts)."""

from __future__ import annotations

import subprocess
import sys

import spora_sd


def test_all_matches_lazy_imports() -> None:
    assert set(spora_sd.__all__) == set(spora_sd._LAZY_IMPORTS) | set(spora_sd.errors.__all__)
    assert len(spora_sd.__all__) == len(set(spora_sd.__all__))
    for name in spora_sd.__all__:
        assert getattr(spora_sd, name) is not None


def test_unknown_attribute() -> None:
    try:
        spora_sd.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_is_light() -> None:
    """`import spora_sd` must not pull in spatialdata, squidpy, lamindb or torch."""
    code = "import sys, spora_sd; print(sorted(m for m in ('spatialdata','squidpy','lamindb','torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
