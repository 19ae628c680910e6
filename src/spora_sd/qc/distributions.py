"""Per-marker intensity distributions across tissues: one strip picture per marker, one column per tissue.

Each tissue contributes a few quantiles of each channel, over the pixels inside its tissue mask of
the level its thumbnail was made from (:func:`tissue_quantiles`: small, so 2,000 tissues cost a few
kilobytes per marker). :func:`strip` draws, per tissue and in table order, the 1-99 % range (grey),
the 25-75 % box (blue) and the median (black) on a log scale shared by all tissues: a failed stain
is a column that drops to the floor, a batch effect a run of columns that shifts together. Columns
of tissues whose image lacks the channel are tinted red. :func:`low_signal` names the tissues
whose 99th percentile is far below the cohort's, as a hint of a failed stain.

Examples
--------
>>> import numpy as np
>>> q = np.array([tissue_quantiles(np.full((1, 4, 4), v, np.float32), None)[0] for v in (10, 12, 0.5)])
>>> low_signal(q)
[2]
>>> strip(q).shape
(72, 36, 3)
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUANTILES", "low_signal", "strip", "tissue_quantiles"]

QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)
# a tissue's 99th percentile below 1/5 of the cohort median: flagged. The 99th, not the 95th: a tissue
# with few positive cells (2 % immune cells) has a background-level 95th percentile of PTPRC.
LOW_SIGNAL_RATIO = 0.2
HEIGHT = 72
_BACKGROUND = (255, 255, 255)
_MISSING = (250, 215, 215)
_RANGE = (200, 200, 200)
_BOX = (70, 130, 180)
_MEDIAN = (0, 0, 0)


def tissue_quantiles(pixels: np.ndarray, inside: np.ndarray | None) -> np.ndarray:
    """``(c, len(QUANTILES))`` quantiles of each channel of ``pixels`` (``(c, y, x)``) inside the mask."""
    flat = pixels.reshape(pixels.shape[0], -1)
    if inside is not None and inside.any():
        flat = flat[:, inside.ravel()]
    if not flat.shape[1]:
        return np.full((pixels.shape[0], len(QUANTILES)), np.nan)
    return np.quantile(flat, QUANTILES, axis=1).T


def low_signal(quantiles: np.ndarray, ratio: float = LOW_SIGNAL_RATIO) -> list[int]:
    """Positions of the tissues whose 99th percentile is below ``ratio`` x the median over tissues.

    ``quantiles`` is ``(tissues, len(QUANTILES))`` for one marker, NaN where a tissue lacks it.
    """
    upper = quantiles[:, -1]
    known = np.isfinite(upper)
    if known.sum() < 3:  # too few tissues to say what is normal
        return []
    reference = float(np.median(upper[known]))
    if reference <= 0:
        return []
    return [int(i) for i in np.flatnonzero(known & (upper < ratio * reference))]


def strip(quantiles: np.ndarray, *, width: int = 720, height: int = HEIGHT) -> np.ndarray:
    """The ``(height, n_tissues * k)`` RGB picture of one marker (``k`` pixels per tissue, 1 to 12)."""
    n = len(quantiles)
    k = int(np.clip(width // max(n, 1), 1, 12))
    out = np.empty((height, max(n, 1) * k, 3), dtype=np.uint8)
    out[:] = _BACKGROUND
    logq = np.log1p(np.clip(quantiles, 0, None))
    top = float(np.nanmax(logq)) if np.isfinite(logq).any() else 0.0
    top = top if top > 0 else 1.0

    def row(value: float) -> int:  # log1p intensity -> pixel row (0 at the top)
        return int(round((height - 1) * (1.0 - value / top)))

    for i, q in enumerate(logq):
        cols = slice(i * k, (i + 1) * k)
        if not np.isfinite(q).all():
            out[:, cols] = _MISSING
            continue
        low, q25, median, q75, high = q
        out[row(high) : row(low) + 1, cols] = _RANGE
        out[row(q75) : row(q25) + 1, cols] = _BOX
        out[row(median), cols] = _MEDIAN
    return out
