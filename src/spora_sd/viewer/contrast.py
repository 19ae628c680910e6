"""Default channels and contrast of the view, chosen without reading a pixel.

Vitessce draws at most six channels at once. The view starts with the nuclear markers and then the
panel's other QC-passing channels, up to six; every channel stays selectable in the layer controller.

Each channel's window (the intensity mapped to full colour) comes from statistics the cohort
already has, so opening the view reads no chunk that the browser did not ask for:

1. the tissue's ``image_level_upper_quantiles`` (the 99th percentile per channel, §6 of the layout),
   and its ``image_level_lower_quantiles`` when stored;
2. else the 99th percentile of the cells' mean intensities in that tissue (``cells.parquet``);
3. else the full range of the image's dtype.

Examples
--------
>>> windows_from_quantiles({"CD3E": 10.0, "KRT5": float("nan")}, ["CD3E", "KRT5"], 65535.0)
{'CD3E': (0.0, 10.0), 'KRT5': (0.0, 65535.0)}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from spora_sd.io.cohort import Cohort

__all__ = ["MAX_CHANNELS", "PALETTE", "default_channels", "default_windows", "windows_from_quantiles"]

logger = logging.getLogger(__name__)

#: Vitessce (viv) draws at most six channels of one image layer.
MAX_CHANNELS = 6
#: Channel colours in the order channels are shown (blue for the first, usually nuclear, marker).
PALETTE = ((0, 110, 255), (0, 255, 0), (255, 0, 0), (255, 0, 255), (255, 255, 0), (0, 255, 255))


def _usable(value: object) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and math.isfinite(float(value)) and value > 0


def windows_from_quantiles(
    upper: Mapping[str, float], channels: Sequence[str], full: float, lower: Mapping[str, float] | None = None
) -> dict[str, tuple[float, float]]:
    """``(low, high)`` per channel: the quantiles where they are usable, ``(0, full)`` elsewhere."""
    out = {}
    for name in channels:
        hi = upper.get(name)
        lo = (lower or {}).get(name, 0.0)
        if _usable(hi):
            lo = float(lo) if _usable(lo) and float(lo) < float(hi) else 0.0
            out[name] = (lo, float(hi))
        else:
            out[name] = (0.0, float(full))
    return out


def _full_range(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def default_windows(
    cohort: Cohort, tissue_id: str, modality: str, channels: Sequence[str], dtype: np.dtype
) -> dict[str, tuple[float, float]]:
    """The contrast window of each channel of one tissue's image (see the module's docstring)."""
    full = _full_range(np.dtype(dtype))
    if modality in cohort.multiplex_modalities:
        for method, param in sorted(cohort.standardization_specs(modality)):
            tables = cohort.standardization(modality, method, param)
            upper = tables.get("image_level_upper_quantiles")
            if upper is None or tissue_id not in upper.index:
                continue
            lower_table = tables.get("image_level_lower_quantiles")
            lower = None
            if lower_table is not None and tissue_id in lower_table.index:
                lower = lower_table.loc[tissue_id].to_dict()
            logger.debug("%s: contrast from %s/%s", tissue_id, method, param)
            return windows_from_quantiles(upper.loc[tissue_id].to_dict(), channels, full, lower)
    present = [c for c in channels if c in cohort.cell_columns]
    if present:
        cells = cohort.cells(columns=present, tissues=[tissue_id])
        if len(cells):
            upper = {c: float(np.nanquantile(cells[c].to_numpy(dtype=float), 0.99)) for c in present}
            logger.debug("%s: contrast from the cells' mean intensities", tissue_id)
            return windows_from_quantiles(upper, channels, full)
    return windows_from_quantiles({}, channels, full)


def default_channels(cohort: Cohort, modality: str, channels: Sequence[str]) -> list[int]:
    """Indices (into ``channels``, the image's channels) shown first: nuclear markers, then QC-passing ones.

    Examples
    --------
    Without a channel table (H&E), the first channels::

        default_channels(cohort, "he", ["R", "G", "B"])  # [0, 1, 2]
    """
    if modality not in cohort.multiplex_modalities:
        return list(range(min(len(channels), MAX_CHANNELS)))
    table = cohort.channels(modality).set_index("channel_name")
    nuclear = table["is_nuclear_marker"].fillna(False).astype(bool) if "is_nuclear_marker" in table else None
    passing = table["qc_pass"].fillna(True).astype(bool) if "qc_pass" in table else None
    order = sorted(
        range(len(channels)),
        key=lambda i: (
            not (nuclear is not None and bool(nuclear.get(channels[i], False))),
            not (passing is None or bool(passing.get(channels[i], True))),
            i,
        ),
    )
    # one nuclear marker is enough: the others (e.g. a second DNA channel) would hide a marker
    picked: list[int] = []
    for i in order:
        is_nuclear = nuclear is not None and bool(nuclear.get(channels[i], False))
        if is_nuclear and any(nuclear is not None and bool(nuclear.get(channels[j], False)) for j in picked):
            continue
        picked.append(i)
        if len(picked) == MAX_CHANNELS:
            break
    return picked
