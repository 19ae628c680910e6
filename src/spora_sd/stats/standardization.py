"""Standardization statistics of a multiplex modality (spec §6), computed exactly, one tissue at a time.

The statistics are those the spora-io reader (and :mod:`spora_sd.ml`) applies to a pixel ``x`` of channel
``c`` of tissue ``t``:

1. clip to ``[lower, upper]``, where ``upper`` is the tissue's ``upper_quantile`` of channel ``c`` over its
   tissue-mask pixels, and ``lower`` is its ``lower_quantile`` when one is asked for, else ``0``;
2. ``quantile_clipping``: ``(clip(x) - lower) / (upper - lower)`` (values in ``[0, 1]``);
   ``quantile_clipping_log1p``: ``log1p(clip(x))``;
3. optionally z-score with the stored global mean and standard deviation of step 2's values.

:func:`standardize` implements steps 1-2; :func:`compute_standardization` writes the tables that
steps 1 and 3 read.

Examples
--------
>>> import numpy as np
>>> standardize(np.array([0.0, 5.0, 20.0]), lower=0.0, upper=10.0, method="quantile_clipping")
array([0. , 0.5, 1. ])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError, TargetExistsError
from spora_sd.io.atomic import atomic_path
from spora_sd.io.cohort import Cohort, open_cohort
from spora_sd.io.images import open_level
from spora_sd.io.manifest import update_manifest
from spora_sd.io.masks import read_mask
from spora_sd.io.tables import write_table
from spora_sd.stats.parallel import imap_tissues

__all__ = [
    "compute_standardization",
    "compute_standardizations",
    "quantile_from_counts",
    "standardization_param",
    "standardize",
]

logger = logging.getLogger(__name__)

METHODS = layout.STANDARDIZATION_METHODS


def standardize(values: np.ndarray, lower: float, upper: float, method: str) -> np.ndarray:
    """Steps 1-2 of the standardization: clip to ``[lower, upper]``, then rescale (float64).

    Parameters
    ----------
    values
        Raw pixel values of one channel.
    lower, upper
        The clipping bounds (``lower`` is ``0`` when the cohort stores no lower quantiles).
    method
        ``"quantile_clipping"``: ``(clip(x, lower, upper) - lower) / (upper - lower)``;
        ``"quantile_clipping_log1p"``: ``log1p(clip(x, lower, upper))``.

    Examples
    --------
    >>> import numpy as np
    >>> standardize(np.array([0, 3, 100]), 0.0, 3.0, "quantile_clipping_log1p").round(4)
    array([0.    , 1.3863, 1.3863])
    """
    clipped = np.clip(np.asarray(values, dtype=np.float64), lower, upper)
    if method == "quantile_clipping":
        return (clipped - lower) / (upper - lower)
    if method == "quantile_clipping_log1p":
        return np.log1p(clipped)
    raise InvalidArgumentError(f"unknown standardization method {method!r}; expected one of {', '.join(METHODS)}")


def standardization_param(upper_quantile: float, lower_quantile: float | None = None) -> str:
    """The parameter folder name: ``uq_0.99``, or ``uq_0.99_lq_0.01`` with a lower quantile (as spora-io names it).

    Examples
    --------
    >>> standardization_param(0.99)
    'uq_0.99'
    >>> standardization_param(0.995, 0.01)
    'uq_0.995_lq_0.01'
    """
    _check_quantile("upper_quantile", upper_quantile)
    if lower_quantile is not None:
        _check_quantile("lower_quantile", lower_quantile)
        if not lower_quantile < upper_quantile:
            raise InvalidArgumentError(
                f"lower_quantile ({lower_quantile}) must be smaller than upper_quantile ({upper_quantile})"
            )
    return layout.format_standardization_param(upper_quantile, lower_quantile)


def _check_quantile(name: str, q: float) -> None:
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= float(q) <= 1.0:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {q!r}")


# --------------------------------------------------------------------------------------------------
# exact quantiles from a histogram (the fast path for 8- and 16-bit unsigned images)


def quantile_from_counts(counts: np.ndarray, q: float) -> float:
    """``numpy.quantile(x, q)`` (default ``"linear"`` method), bit for bit, from ``counts = numpy.bincount(x)``.

    For unsigned 8/16-bit images a histogram is an exact, small summary of a channel: it gives the same
    quantile as sorting the pixels (the same arithmetic as numpy's interpolation is done on the same two
    neighbouring values), and histograms of several tissues add up to the histogram of their pooled
    pixels, which makes the global quantile exact without holding the pixels.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype="uint16")
    >>> quantile_from_counts(np.bincount(x), 0.9) == np.quantile(x, 0.9)
    np.True_
    """
    counts = np.asarray(counts)
    cumulative = np.cumsum(counts, dtype=np.int64)
    n = int(cumulative[-1]) if cumulative.size else 0
    if n == 0:
        return float("nan")
    # numpy: virtual index (n - 1) * q, neighbours floor and floor + 1, clipped to the last element.
    virtual = np.float64(n - 1) * np.float64(q)
    if virtual >= n - 1:
        return float(np.searchsorted(cumulative, n - 1, side="right"))
    if virtual < 0:
        virtual = np.float64(0.0)
    previous = int(np.floor(virtual))
    # The value at sorted position k is the first bin whose cumulative count exceeds k.
    a, b = np.searchsorted(cumulative, [previous, previous + 1], side="right").astype(np.float64)
    gamma = virtual - np.float64(previous)
    diff = b - a
    # numpy's _lerp: a + diff * t, but b - diff * (1 - t) where t >= 0.5 (keeps monotonicity).
    return float(b - diff * (1 - gamma)) if gamma >= 0.5 else float(a + diff * gamma)


def _histogram_path(dtype: np.dtype) -> bool:
    return dtype.kind == "u" and dtype.itemsize <= 2


# --------------------------------------------------------------------------------------------------
# one tissue


@dataclass(frozen=True)
class _TissueJob:
    """Everything a worker needs for one tissue (paths and numbers only, so it pickles cheaply)."""

    tissue_id: str
    image: str
    mask: str | None
    positions: tuple[int, ...]  # panel position of each image channel
    n_panel: int
    upper_quantile: float
    lower_quantile: float | None
    methods: tuple[str, ...]


@dataclass
class _TissueStats:
    """Per-channel results of one tissue, over the whole panel (NaN / 0 where the tissue lacks a channel)."""

    upper: np.ndarray
    lower: np.ndarray | None
    count: np.ndarray  # pixels of the standardized values (0 where the bounds are unusable)
    mean: dict[str, np.ndarray]
    m2: dict[str, np.ndarray]  # sum of squared deviations from the mean
    pixels: np.ndarray  # tissue pixels per channel, for the global quantiles
    histograms: list[np.ndarray | None] | None = field(default=None)  # None: not an 8/16-bit image


def _read_image(path: str) -> np.ndarray:
    # checked reads: a missing shard or a corrupt chunk is a CohortFormatError naming it, never zeros
    level = open_level(path, "0")
    return level.read([(0, n) for n in level.shape])


def _channel_moments(
    values: np.ndarray, counts: np.ndarray | None, lower: float, upper: float, method: str
) -> tuple[float, float]:
    """Mean and sum of squared deviations of the standardized values (two passes, float64)."""
    if counts is not None:
        support = np.flatnonzero(counts)
        weights = counts[support].astype(np.float64)
        y = standardize(support, lower, upper, method)
        mean = float((weights * y).sum() / weights.sum())
        return mean, float((weights * (y - mean) ** 2).sum())
    y = standardize(values, lower, upper, method)
    mean = float(y.mean())
    return mean, float(((y - mean) ** 2).sum())


def _tissue_stats(job: _TissueJob) -> _TissueStats:
    image = _read_image(job.image)
    if image.ndim != 3 or image.shape[0] != len(job.positions):
        raise CohortFormatError(
            job.image,
            "image.channels",
            f"image has shape {image.shape}; expected {len(job.positions)} channels (its channels_per_tissue row)",
        )
    if job.mask is not None:
        mask = read_mask(job.mask).astype(bool, copy=False)
        if mask.shape != image.shape[1:]:
            raise CohortFormatError(
                job.mask, "mask.shape", f"tissue mask shape {mask.shape} differs from the image's {image.shape[1:]}"
            )
        if not mask.any():
            logger.warning("%s: the tissue mask is empty; the tissue gets NaN statistics", job.mask)
    else:
        mask = None

    nan = np.full(job.n_panel, np.nan)
    upper = nan.copy()
    lower = nan.copy() if job.lower_quantile is not None else None
    count = np.zeros(job.n_panel, dtype=np.int64)
    pixels = np.zeros(job.n_panel, dtype=np.int64)
    mean = {m: nan.copy() for m in job.methods}
    m2 = {m: nan.copy() for m in job.methods}
    use_histograms = _histogram_path(image.dtype)
    histograms: list[np.ndarray | None] | None = [None] * job.n_panel if use_histograms else None

    for k, j in enumerate(job.positions):
        values = image[k][mask] if mask is not None else image[k].ravel()
        pixels[j] = values.size
        if values.size == 0:
            continue
        counts = np.bincount(values.ravel().astype(np.intp, copy=False)) if use_histograms else None
        if histograms is not None:
            histograms[j] = counts
        if counts is not None:
            upper[j] = quantile_from_counts(counts, job.upper_quantile)
            lo = quantile_from_counts(counts, job.lower_quantile) if job.lower_quantile is not None else 0.0
        else:
            upper[j] = float(np.quantile(values, job.upper_quantile))
            lo = float(np.quantile(values, job.lower_quantile)) if job.lower_quantile is not None else 0.0
        if lower is not None:
            lower[j] = lo
        if not (np.isfinite(upper[j]) and np.isfinite(lo) and upper[j] > lo):
            # No usable range (e.g. a channel that is zero on 99% of the tissue): readers drop this
            # channel for this tissue, so it contributes nothing to the global statistics either.
            continue
        count[j] = values.size
        for method in job.methods:
            mean[method][j], m2[method][j] = _channel_moments(values, counts, lo, float(upper[j]), method)
    return _TissueStats(upper, lower, count, mean, m2, pixels, histograms)


# --------------------------------------------------------------------------------------------------
# combining tissues


class _Moments:
    """Running count, mean and M2 per channel, merged with Chan et al.'s parallel formula (float64)."""

    def __init__(self, n_panel: int) -> None:
        self.n = np.zeros(n_panel, dtype=np.int64)
        self.mean = np.zeros(n_panel)
        self.m2 = np.zeros(n_panel)

    def add(self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        n_b = n.astype(np.float64)
        mean_b = np.where(n > 0, mean, 0.0)
        m2_b = np.where(n > 0, m2, 0.0)
        total = self.n + n
        weight = np.divide(n_b, total, out=np.zeros_like(n_b), where=total > 0)
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + delta**2 * self.n * weight
        self.mean = self.mean + delta * weight
        self.n = total

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        ok = self.n > 0
        mean = np.where(ok, self.mean, np.nan)
        std = np.sqrt(np.divide(self.m2, self.n, out=np.full_like(self.m2, np.nan), where=ok))
        return mean, std


def _add_histogram(total: np.ndarray | None, counts: np.ndarray) -> np.ndarray:
    if total is None:
        return counts.astype(np.int64)
    if counts.size > total.size:
        total, counts = counts.astype(np.int64), total
    total = total.copy()
    total[: counts.size] += counts
    return total


@dataclass(frozen=True)
class _Setup:
    cohort: Cohort
    modality: str
    mpp: float
    panel: list[str]
    tissue_ids: list[str]
    jobs: list[_TissueJob]


def _setup(
    cohort: Cohort,
    modality: str,
    methods: tuple[str, ...],
    upper_quantile: float,
    lower_quantile: float | None,
    resolution: float | None,
    use_tissue_mask: bool,
) -> _Setup:
    if not layout.is_multiplex(modality):
        raise InvalidArgumentError(f"standardization statistics exist for multiplex modalities only, not {modality!r}")
    for method in methods:
        if method not in METHODS:
            raise InvalidArgumentError(
                f"unknown standardization method {method!r}; expected one of {', '.join(METHODS)}"
            )
    if resolution is None:
        available = cohort.resolutions(modality)
        if not available:
            raise CohortNotFoundError(f"{cohort.paths.modality_dir(modality)}: no resolution folder (e.g. 1_0mpp)")
        resolution = available[0]  # the finest
    mpp = float(resolution)
    panel = cohort.panel(modality)
    index = {name: i for i, name in enumerate(panel)}
    tissue_ids = cohort.tissue_ids(modality)
    if not tissue_ids:
        raise CohortNotFoundError(f"{cohort.paths.tissues}: no tissue has modality {modality!r}")
    jobs = []
    for tissue_id in tissue_ids:
        image = cohort.paths.image(modality, mpp, tissue_id)
        if not image.exists():
            raise CohortNotFoundError(f"{image}: image not found")
        mask = cohort.paths.tissue_mask(mpp, tissue_id) if use_tissue_mask else None
        if mask is not None and not mask.is_file():
            raise CohortNotFoundError(f"{mask}: tissue mask not found (pass use_tissue_mask=False to use every pixel)")
        positions = tuple(index[name] for name in cohort.tissue_channels(tissue_id, modality))
        jobs.append(
            _TissueJob(
                tissue_id=tissue_id,
                image=str(image),
                mask=str(mask) if mask is not None else None,
                positions=positions,
                n_panel=len(panel),
                upper_quantile=float(upper_quantile),
                lower_quantile=None if lower_quantile is None else float(lower_quantile),
                methods=methods,
            )
        )
    return _Setup(cohort, modality, mpp, panel, tissue_ids, jobs)


def compute_standardizations(
    cohort: str | Path | Cohort,
    modality: str = "imc",
    methods: Sequence[str] = METHODS,
    upper_quantile: float = 0.99,
    lower_quantile: float | None = None,
    resolution: float | None = None,
    use_tissue_mask: bool = True,
    overwrite: bool = True,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
    output: str | Path | None = None,
) -> list[Path]:
    """Like :func:`compute_standardization`, for several methods in one pass over the images.

    The image-level quantiles are shared by all methods, so reading every image once serves them all.

    Returns
    -------
    list of Path
        One folder per method, in the order of ``methods``.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10,
    ...                                       standardization=False, tiling=False)
    >>> [p.parent.name for p in compute_standardizations(root)]
    ['quantile_clipping', 'quantile_clipping_log1p']
    """
    cohort = open_cohort(cohort, storage_options=storage_options)
    target = cohort.output_paths(output)  # a remote cohort is read, never written: output= a local folder
    methods = tuple(dict.fromkeys(methods))
    param = standardization_param(upper_quantile, lower_quantile)
    setup = _setup(cohort, modality, methods, upper_quantile, lower_quantile, resolution, use_tissue_mask)
    folders = [target.standardization_dir(modality, setup.mpp, m, param) for m in methods]
    if not overwrite:
        existing = [f for f in folders if f.exists()]
        if existing:
            raise TargetExistsError(f"{existing[0]} exists; pass overwrite=True to replace it")

    n_tissues, n_panel = len(setup.jobs), len(setup.panel)
    upper = np.full((n_tissues, n_panel), np.nan)
    lower = np.full((n_tissues, n_panel), np.nan) if lower_quantile is not None else None
    image_mean = {m: np.full((n_tissues, n_panel), np.nan) for m in methods}
    image_std = {m: np.full((n_tissues, n_panel), np.nan) for m in methods}
    moments = {m: _Moments(n_panel) for m in methods}
    histograms: list[np.ndarray | None] | None = [None] * n_panel
    for i, stats in imap_tissues(
        _tissue_stats, setup.jobs, progress=progress, description=f"standardization {modality}"
    ):
        upper[i] = stats.upper
        if lower is not None and stats.lower is not None:
            lower[i] = stats.lower
        for m in methods:
            ok = stats.count > 0
            image_mean[m][i] = np.where(ok, stats.mean[m], np.nan)
            image_std[m][i] = np.sqrt(np.divide(stats.m2[m], stats.count, out=np.full(n_panel, np.nan), where=ok))
            moments[m].add(stats.count, stats.mean[m], stats.m2[m])
        if stats.histograms is None:
            histograms = None  # one image that is not 8/16-bit: no exact global quantiles
        elif histograms is not None:
            for j, counts in enumerate(stats.histograms):
                if counts is not None:
                    histograms[j] = _add_histogram(histograms[j], counts)

    def per_tissue(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=pd.Index(setup.tissue_ids, name="tissue_id"), columns=setup.panel)

    def single_row(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame([values], columns=setup.panel)

    shared: dict[str, pd.DataFrame] = {"image_level_upper_quantiles": per_tissue(upper)}
    if lower is not None:
        shared["image_level_lower_quantiles"] = per_tissue(lower)
    if histograms is not None:
        shared["global_level_upper_quantiles"] = single_row(
            np.array([quantile_from_counts(h, upper_quantile) if h is not None else np.nan for h in histograms])
        )
        if lower_quantile is not None:
            shared["global_level_lower_quantiles"] = single_row(
                np.array([quantile_from_counts(h, lower_quantile) if h is not None else np.nan for h in histograms])
            )
    else:
        logger.info("images are not 8/16-bit unsigned integers: global_level_*_quantiles are not written")

    for method, folder in zip(methods, folders, strict=True):
        global_mean, global_std = moments[method].result()
        tables = {
            **shared,
            "image_level_means": per_tissue(image_mean[method]),
            "image_level_stds": per_tissue(image_std[method]),
            "global_level_means": single_row(global_mean),
            "global_level_stds": single_row(global_std),
        }
        # The folder is built under a temporary name and renamed: readers never see half a spec.
        with atomic_path(folder, overwrite=overwrite) as tmp:
            tmp.mkdir(parents=True)
            for name, df in tables.items():
                kind = "standardization_image" if name.startswith("image_level") else "standardization_global"
                write_table(
                    df,
                    target.standardization_file(tmp, name),
                    kind,
                    channels=setup.panel,
                    dataset=cohort.dataset,
                )
        logger.info("wrote %s", folder)
    update_manifest(target.root, folders)  # a cohort exported with a manifest keeps it current
    return folders


def compute_standardization(
    cohort: str | Path | Cohort,
    modality: str = "imc",
    method: str = "quantile_clipping",
    upper_quantile: float = 0.99,
    lower_quantile: float | None = None,
    resolution: float | None = None,
    use_tissue_mask: bool = True,
    overwrite: bool = True,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
    output: str | Path | None = None,
) -> Path:
    """Compute and write the spec §6 standardization tables of one method.

    Writes ``<modality>/<res>/standardization/<method>/uq_<q>/`` (``uq_<q>_lq_<p>`` with a lower
    quantile), atomically (the folder appears complete or not at all):

    - ``image_level_upper_quantiles``: per tissue and channel, ``numpy.quantile(x, upper_quantile)``
      (default ``"linear"`` method) over the channel's tissue-mask pixels ``x``; exact, no sketch.
      For 8/16-bit unsigned images it is computed from the pixel histogram, which gives the same
      number bit for bit.
    - ``image_level_lower_quantiles`` (only when ``lower_quantile`` is given): the same at ``lower_quantile``.
    - ``image_level_means`` / ``image_level_stds``: mean and population std (``ddof=0``) of the
      tissue's standardized values ``y = standardize(x, lower, upper, method)`` (see :func:`standardize`:
      ``(clip(x, lower, upper) - lower) / (upper - lower)``, or ``log1p(clip(x, lower, upper))`` for
      ``quantile_clipping_log1p``), with ``upper``/``lower`` the tissue's own image-level quantiles and
      ``lower = 0`` when no lower quantile is asked for, as the spora-io reader applies them.
    - ``global_level_means`` / ``global_level_stds`` (one row): mean and population std of ``y`` over
      the pooled tissue pixels of all tissues, i.e. ``numpy.mean`` / ``numpy.std`` of the
      concatenation of every tissue's ``y``. Per-tissue counts, means and sums of squared deviations
      are combined with Chan et al.'s parallel formula in float64, so no pixel is held beyond its tissue.
    - ``global_level_upper_quantiles`` (and ``_lower_``): the exact quantile of the pooled raw tissue
      pixels of all tissues, from summed histograms; written only when every image is 8/16-bit
      unsigned (a float image has no exact streaming summary).

    Every channel of the panel is a column, in ``channels.parquet`` order. A tissue that lacks a
    channel is NaN there. A tissue-channel whose bounds are unusable (``upper <= lower``, e.g. a channel
    that is 0 on at least ``upper_quantile`` of the tissue) gets NaN mean/std and is left out of the
    global statistics: readers drop that channel for that tissue.

    Tissues are processed one at a time (one image in memory), or one task per tissue on the active
    ``dask.distributed`` client (see :mod:`spora_sd.stats.parallel`).

    Parameters
    ----------
    cohort
        A cohort folder, dataset key, alias, or an opened :class:`~spora_sd.io.cohort.Cohort`
        (anything :func:`spora_sd.open_cohort` accepts).
    modality
        A multiplex modality of the cohort.
    method
        ``"quantile_clipping"`` or ``"quantile_clipping_log1p"``.
    upper_quantile, lower_quantile
        Quantile levels in ``[0, 1]``; no lower quantile means ``lower = 0``.
    resolution
        Microns per pixel; default the finest stored for ``modality``.
    use_tissue_mask
        Use only the pixels of ``segmentations/<res>/tissue_masks`` (else every pixel).
    overwrite
        Replace an existing folder (else :class:`~spora_sd.errors.TargetExistsError`).
    progress
        Show a progress bar.
    storage_options
        Options of the remote filesystem when ``cohort`` is remote (see :func:`spora_sd.open_cohort`).
    output
        A local cohort folder to write the tables into (same relative paths) instead of the cohort
        itself; required for a remote cohort, which is never written to.

    Returns
    -------
    Path
        The folder written.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10,
    ...                                       standardization=False, tiling=False)
    >>> compute_standardization(root, "imc", "quantile_clipping").relative_to(root).as_posix()
    'imc/1_0mpp/standardization/quantile_clipping/uq_0.99'
    """
    return compute_standardizations(
        cohort,
        modality,
        (method,),
        upper_quantile=upper_quantile,
        lower_quantile=lower_quantile,
        resolution=resolution,
        use_tissue_mask=use_tissue_mask,
        overwrite=overwrite,
        progress=progress,
        storage_options=storage_options,
        output=output,
    )[0]
