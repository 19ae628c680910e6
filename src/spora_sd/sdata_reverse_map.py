"""Build an export plan from the reverse map that :func:`spora_sd.to_spatialdata` stores in ``attrs``."""

from __future__ import annotations

from typing import Any

from .export_plan import ExportPlan
from .naming import ATTRS_KEY

__all__ = ["has_reverse_map", "plan_from_reverse_map"]


def has_reverse_map(sdata: Any) -> bool:
    """Whether ``sdata.attrs["spora"]["elements"]`` is present."""
    spora = getattr(sdata, "attrs", {}).get(ATTRS_KEY)
    return isinstance(spora, dict) and isinstance(spora.get("elements"), dict)


def plan_from_reverse_map(sdata: Any, *, dataset: str) -> ExportPlan:
    raise NotImplementedError
