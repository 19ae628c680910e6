"""Standardization of multiplex tiles with a cohort's stored statistics (spec §6), as the spora-io reader does it.

For channel ``c`` of tissue ``t``, with ``upper`` from ``image_level_upper_quantiles``, ``lower`` from
``image_level_lower_quantiles`` when the folder has that table (else ``0``), and ``mean``/``std`` from
``global_level_means``/``global_level_stds``:

1. clip: ``x = clip(x, lower, upper)``;
2. ``quantile_clipping``: ``y = (x - lower) / (upper - lower)``; ``quantile_clipping_log1p``: ``y = log1p(x)``;
3. z-score (when asked): ``y = (y - mean) / std``.

These are the formulas that :func:`spora_sd.stats.standardization.compute_standardization` documents and
computes its statistics for. A channel is dropped for a tissue when one of the statistics it needs is
NaN or infinite, when ``upper <= lower`` (a zero range, e.g. ``upper`` is 0) or, with the z-score, when
``std`` is 0: the tile then has fewer channels, and ``channel_present`` says which.

Examples
--------
>>> import numpy as np
>>> x = np.array([[[0, 5], [10, 20]]], dtype="uint16")  # one channel, 2 x 2 pixels
>>> standardize_channels(x, lower=np.array([0.0]), upper=np.array([10.0]), method="quantile_clipping")
array([[[0. , 0.5],
        [1. , 1. ]]], dtype=float32)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.errors import CohortFormatError, InvalidArgumentError

if TYPE_CHECKING:
    from spora_sd.io.cohort import Cohort

__all__ = ["Standardizer", "parse_standardization", "standardize_channels"]

logger = logging.getLogger(__name__)

#: Budget of the lookup tables kept per process (a table is at most 65,536 float32 values per channel).
LUT_CACHE_BYTES = 64 * 2**20


def parse_standardization(spec: str) -> tuple[str, str]:
    """Split ``"<method>/<param>"`` (e.g. ``"quantile_clipping_log1p/uq_0.99"``) into method and parameter.

    Examples
    --------
    >>> parse_standardization("quantile_clipping/uq_0.99_image")
    ('quantile_clipping', 'uq_0.99_image')
    """
    parts = str(spec).strip().strip("/").split("/")
    if len(parts) != 2 or parts[0] not in layout.STANDARDIZATION_METHODS or not parts[1]:
        raise InvalidArgumentError(
            f"invalid standardization {spec!r}: expected '<method>/<param>' with method one of "
            f"{', '.join(layout.STANDARDIZATION_METHODS)}, e.g. 'quantile_clipping_log1p/uq_0.99'"
        )
    return parts[0], parts[1]


def _coefficients(
    lower: np.ndarray, upper: np.ndarray, method: str, mean: np.ndarray | None, std: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, offset)`` so that steps 2-3 are ``y = f(x) * scale + offset`` (f: identity or log1p)."""
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "quantile_clipping":
            scale, offset = 1.0 / (upper - lower), -lower / (upper - lower)
        elif method == "quantile_clipping_log1p":
            scale, offset = np.ones_like(upper), np.zeros_like(upper)
        else:
            raise ValueError(
                f"unknown standardization method {method!r}; expected one of {', '.join(layout.STANDARDIZATION_METHODS)}"
            )
        if mean is not None and std is not None:
            mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
            scale, offset = scale / std, (offset - mean) / std
    return scale, offset


def standardize_channels(
    x: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    method: str,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> np.ndarray:
    """Standardize a ``(C, H, W)`` tile with per-channel statistics; returns float32.

    Parameters
    ----------
    x
        Raw pixel values, channels first.
    lower, upper
        Per-channel clipping bounds (``C`` values each).
    method
        ``"quantile_clipping"`` or ``"quantile_clipping_log1p"``.
    mean, std
        Per-channel z-score statistics; both or neither.

    Examples
    --------
    >>> import numpy as np
    >>> standardize_channels(np.full((1, 1, 1), 3.0), np.zeros(1), np.full(1, 3.0), "quantile_clipping_log1p")
    array([[[1.3862944]]], dtype=float32)
    """
    scale, offset = _coefficients(lower, upper, method, mean, std)
    out = np.array(x, dtype=np.float32, copy=True)
    return _apply(out, np.asarray(lower), np.asarray(upper), method, scale, offset)


def _apply(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, method: str, scale: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """In place on a float32 ``(C, H, W)`` array: clip, (log1p), then one multiply-add per pixel."""
    lower, upper = lower.astype(np.float32), upper.astype(np.float32)
    np.clip(x, lower[:, None, None], upper[:, None, None], out=x)
    if method == "quantile_clipping_log1p":
        np.log1p(x, out=x)
    x *= scale.astype(np.float32)[:, None, None]
    x += offset.astype(np.float32)[:, None, None]
    return x


def _row(table: pd.DataFrame, panel: Sequence[str]) -> np.ndarray:
    """The single row of a global table as floats over the panel (NaN where a channel has no column)."""
    return table.reindex(columns=list(panel)).iloc[0].to_numpy(dtype=np.float64, na_value=np.nan)


class Standardizer:
    """The standardization of one modality of a cohort, ready to apply to tiles of any of its tissues.

    Build it with :meth:`from_cohort`. It holds the statistics as plain arrays over the panel (no
    file handle), so it pickles cheaply into ``DataLoader`` workers.

    Parameters
    ----------
    panel
        The cohort panel (``channels.parquet`` order); the statistics tables' columns are matched by name.
    method
        ``"quantile_clipping"`` or ``"quantile_clipping_log1p"``.
    upper
        ``image_level_upper_quantiles``: index ``tissue_id``, one column per channel.
    lower
        ``image_level_lower_quantiles``, or ``None`` for ``lower = 0``.
    mean, std
        ``global_level_means`` / ``global_level_stds`` (one row), or ``None`` for no z-score.
    source
        Where the statistics come from, for error messages.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> upper = pd.DataFrame({"CD3E": [10.0], "DNA1": [0.0]}, index=pd.Index(["t"], name="tissue_id"))
    >>> s = Standardizer(["CD3E", "DNA1"], "quantile_clipping", upper)
    >>> s.valid("t").tolist()  # DNA1's upper quantile is 0: dropped
    [True, False]
    >>> s.apply(np.full((1, 2, 2), 5, "uint16"), "t", np.array([0]))[0, 0].tolist()
    [0.5, 0.5]
    """

    def __init__(
        self,
        panel: Sequence[str],
        method: str,
        upper: pd.DataFrame,
        lower: pd.DataFrame | None = None,
        mean: pd.DataFrame | None = None,
        std: pd.DataFrame | None = None,
        source: str = "standardization statistics",
    ) -> None:
        if method not in layout.STANDARDIZATION_METHODS:
            raise InvalidArgumentError(
                f"unknown standardization method {method!r}; expected one of {', '.join(layout.STANDARDIZATION_METHODS)}"
            )
        if (mean is None) != (std is None):
            raise InvalidArgumentError("the z-score needs both the global means and the global stds")
        self.panel = list(panel)
        self.method = method
        self.source = source
        self.zscore = mean is not None
        self._tissues = {str(t): i for i, t in enumerate(upper.index)}
        self._upper = upper.reindex(columns=self.panel).to_numpy(dtype=np.float64, na_value=np.nan)
        if lower is not None:
            lower = lower.reindex(index=upper.index, columns=self.panel)
            self._lower = lower.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            self._lower = np.zeros_like(self._upper)
        self._mean = _row(mean, self.panel) if mean is not None else None
        self._std = _row(std, self.panel) if std is not None else None
        self._per_tissue: dict[str, tuple[np.ndarray, ...]] = {}
        self._luts: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lut_bytes = 0

    @classmethod
    def from_cohort(
        cls,
        cohort: str | Path | Cohort,
        modality: str = "imc",
        standardization: str = "quantile_clipping_log1p/uq_0.99",
        resolution: float | None = None,
        zscore: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> Standardizer:
        """Load the statistics of ``<modality>/<res>/standardization/<method>/<param>/`` of a cohort.

        Parameters
        ----------
        cohort
            A cohort path or :class:`~spora_sd.io.cohort.Cohort`.
        modality
            A multiplex modality.
        standardization
            ``"<method>/<param>"``; both folder spellings (``uq_0.99`` and spora-io's ``uq_0.99_image``) are found.
        resolution
            Microns per pixel (default: the finest stored).
        zscore
            Apply step 3 with the global means and stds.
        storage_options
            Options of the remote filesystem when ``cohort`` is remote (see :func:`spora_sd.open_cohort`).

        Examples
        --------
        >>> import spora_sd, tempfile
        >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10)
        >>> Standardizer.from_cohort(root, "imc", "quantile_clipping/uq_0.99").method
        'quantile_clipping'
        """
        from spora_sd.io.cohort import open_cohort

        cohort = open_cohort(cohort, storage_options=storage_options)
        if not layout.is_multiplex(modality):
            raise InvalidArgumentError(
                f"standardization statistics exist for multiplex modalities only, not {modality!r}"
            )
        method, param = parse_standardization(standardization)
        tables = cohort.standardization(modality, method, param, resolution)
        mpp = cohort._default_resolution(modality, resolution)
        # cohort.standardization found one of these folders; name it in errors.
        folder = next(c for c in cohort.paths.standardization_candidates(modality, mpp, method, param) if c.is_dir())
        upper = tables["image_level_upper_quantiles"]
        panel = cohort.panel(modality)
        unknown = [c for c in upper.columns if c not in panel]
        if unknown:
            raise CohortFormatError(
                cohort.paths.standardization_file(folder, "image_level_upper_quantiles"),
                "table.channels.mismatch",
                f"columns that are not channels of {cohort.paths.channels(modality)}: {unknown[:5]}",
            )
        return cls(
            panel,
            method,
            upper,
            lower=tables.get("image_level_lower_quantiles"),
            mean=tables["global_level_means"] if zscore else None,
            std=tables["global_level_stds"] if zscore else None,
            source=str(folder),
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_per_tissue"] = {}  # rebuilt on demand in each worker
        state["_luts"], state["_lut_bytes"] = OrderedDict(), 0
        return state

    def _stats(self, tissue_id: str) -> tuple[np.ndarray, ...]:
        cached = self._per_tissue.get(tissue_id)
        if cached is not None:
            return cached
        i = self._tissues.get(tissue_id)
        if i is None:
            raise CohortFormatError(self.source, "ids.inconsistent", f"no statistics for tissue {tissue_id!r}")
        upper, lower = self._upper[i], self._lower[i]
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(upper) & np.isfinite(lower) & (upper > lower)
            if self.zscore:
                valid &= np.isfinite(self._mean) & np.isfinite(self._std) & (self._std > 0)
        scale, offset = _coefficients(lower, upper, self.method, self._mean, self._std)
        stats = (valid, lower, upper, scale, offset)
        self._per_tissue[tissue_id] = stats
        return stats

    def valid(self, tissue_id: str) -> np.ndarray:
        """Boolean over the panel: channels whose statistics are usable for this tissue."""
        return self._stats(tissue_id)[0].copy()

    def statistics(self, tissue_id: str) -> pd.DataFrame:
        """The statistics applied to one tissue: ``lower, upper, mean, std, valid`` per panel channel."""
        valid, lower, upper, _, _ = self._stats(tissue_id)
        data = {"lower": lower, "upper": upper}
        if self.zscore:
            data["mean"], data["std"] = self._mean, self._std
        data["valid"] = valid
        return pd.DataFrame(data, index=pd.Index(self.panel, name="channel_name"))

    def apply(self, x: np.ndarray, tissue_id: str, positions: np.ndarray) -> np.ndarray:
        """Standardize a ``(C, H, W)`` tile whose channel ``k`` is panel channel ``positions[k]``; float32.

        The channels must be valid for the tissue (see :meth:`valid`); the caller drops the others.
        8- and 16-bit unsigned images go through a per-channel lookup table (the formulas evaluated
        in float64 once for every integer value up to ``ceil(upper)``, one gather per pixel); other
        dtypes through float32 arithmetic.
        """
        positions = np.asarray(positions, dtype=np.intp)
        if x.dtype.kind == "u" and x.dtype.itemsize <= 2:
            out = np.empty(x.shape, dtype=np.float32)
            for k, position in enumerate(positions):
                # mode="clip": values above the table are clipped to ceil(upper), which maps to f(upper).
                np.take(self._lut(tissue_id, int(position)), x[k], out=out[k], mode="clip")
            return out
        _, lower, upper, scale, offset = self._stats(tissue_id)
        out = x.astype(np.float32, copy=True)
        return _apply(out, lower[positions], upper[positions], self.method, scale[positions], offset[positions])

    def _lut(self, tissue_id: str, position: int) -> np.ndarray:
        """``f(v)`` for ``v = 0, 1, ..., ceil(upper)`` of one tissue and panel channel (least recently used out)."""
        key = (tissue_id, position)
        lut = self._luts.get(key)
        if lut is not None:
            self._luts.move_to_end(key)
            return lut
        valid, lower, upper, scale, offset = self._stats(tissue_id)
        if not valid[position]:
            raise InvalidArgumentError(
                f"{self.panel[position]!r} has unusable statistics for tissue {tissue_id!r}; "
                "apply only the channels that Standardizer.valid(tissue_id) marks usable"
            )
        values = np.arange(int(np.ceil(min(float(upper[position]), 65535.0))) + 1, dtype=np.float64)
        y = np.clip(values, float(lower[position]), float(upper[position]))
        if self.method == "quantile_clipping_log1p":
            y = np.log1p(y)
        lut = (y * scale[position] + offset[position]).astype(np.float32)
        self._luts[key] = lut
        self._lut_bytes += lut.nbytes
        while self._lut_bytes > LUT_CACHE_BYTES and len(self._luts) > 1:
            _, old = self._luts.popitem(last=False)
            self._lut_bytes -= old.nbytes
        return lut
