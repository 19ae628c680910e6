"""Per-cell statistics from the instance masks: pixel counts, centroids, mean intensities.

Everything here is a weighted :func:`numpy.bincount` over the instance mask's labels, one tissue at a
time and one strip of rows at a time, so memory stays at one mask plus one strip of the image whatever
the cohort size. Results are dense arrays indexed by the cell label (``cell_id``), which is what
:func:`spora_sd.to_spatialdata` needs to fill the rows of its cell table.

Examples
--------
>>> import numpy as np
>>> mask = np.array([[0, 1, 1], [2, 2, 0]], dtype="uint32")
>>> counts, cy, cx = label_centroids(mask)
>>> counts.tolist(), cy[1:].tolist(), cx[1:].tolist()
([2, 2, 2], [0.0, 1.0], [1.5, 0.5])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError
from spora_sd.io.cohort import Cohort, open_cohort
from spora_sd.io.images import open_image_levels
from spora_sd.io.masks import read_mask
from spora_sd.stats.parallel import imap_tissues

__all__ = ["compute_cell_intensities", "image_means", "label_centroids", "label_means"]

logger = logging.getLogger(__name__)

# Rows per strip: about 4 million pixels, so that the float64 weights of one strip stay near 32 MB.
_STRIP_PIXELS = 1 << 22


def _strips(height: int, width: int, multiple: int = 1) -> list[tuple[int, int]]:
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    rows = max(multiple, rows // multiple * multiple)
    return [(y0, min(y0 + rows, height)) for y0 in range(0, height, rows)]


def _labels(mask: np.ndarray, path: Any = "mask") -> np.ndarray:
    if mask.ndim != 2:
        raise CohortFormatError(path, "mask.shape", f"an instance mask must be 2-D, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise CohortFormatError(path, "mask.dtype", f"an instance mask must hold integers, not {mask.dtype}")
    if mask.size and np.issubdtype(mask.dtype, np.signedinteger) and mask.min() < 0:
        raise CohortFormatError(path, "mask.values", "an instance mask must not hold negative labels")
    return mask


def _chunk_rows(image: Any) -> int:
    """Rows of one chunk of a dask or zarr ``(C, Y, X)`` array (1 for numpy), so strips cover whole chunks."""
    chunks = getattr(image, "chunks", None)
    if isinstance(chunks, tuple) and len(chunks) == 3:
        rows = chunks[1][0] if isinstance(chunks[1], tuple) else chunks[1]
        return max(1, int(rows))
    return 1


def label_centroids(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel count and mean row / column of every label of an instance mask.

    Parameters
    ----------
    mask
        ``(Y, X)`` instance mask, 0 = background.

    Returns
    -------
    counts, mean_y, mean_x
        Arrays of length ``max label + 1`` indexed by label; the means are in pixel indices (the centre
        of pixel ``(i, j)`` is ``(i, j)``) and NaN for labels with no pixel and for the background.

    Examples
    --------
    >>> import numpy as np
    >>> counts, cy, cx = label_centroids(np.array([[3, 3], [0, 3]], dtype="uint16"))
    >>> int(counts[3]), float(cy[3]), float(cx[3])
    (3, 0.3333333333333333, 0.6666666666666666)
    """
    mask = _labels(mask)
    height, width = mask.shape
    n = int(mask.max()) + 1 if mask.size else 1
    counts = np.zeros(n, dtype=np.int64)
    sum_y = np.zeros(n, dtype=np.float64)
    sum_flat = np.zeros(n, dtype=np.float64)  # of y * width + x: sum_x follows, with one bincount less
    for y0, y1 in _strips(height, width):
        strip = mask[y0:y1].ravel()
        # Foreground pixels only: the background needs no coordinates, and cells cover a fraction of
        # a tissue, so this is less work than weighting every pixel (and no full-size weight arrays).
        where = np.flatnonzero(strip)
        labels = strip[where].astype(np.intp, copy=False)
        where += y0 * width
        counts += np.bincount(labels, minlength=n)
        sum_flat += np.bincount(labels, weights=where, minlength=n)
        sum_y += np.bincount(labels, weights=where // width, minlength=n)
    # Integer sums below 2**53 are exact in float64, so sum_x is exact too.
    sum_x = sum_flat - width * sum_y
    counts[0] = mask.size - counts[1:].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_y, mean_x = sum_y / counts, sum_x / counts
    mean_y[0] = mean_x[0] = np.nan
    return counts, mean_y, mean_x


def label_means(image: Any, mask: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Mean of every channel of ``image`` over every label of ``mask``.

    The image is read one strip of rows at a time (whole Zarr chunks when it is a dask array over
    Zarr), so only one strip of all channels is in memory.

    Parameters
    ----------
    image
        ``(C, Y, X)`` array: numpy, dask or zarr.
    mask
        ``(Y, X)`` instance mask of the same height and width.
    counts
        ``numpy.bincount(mask.ravel())`` when already known.

    Returns
    -------
    numpy.ndarray
        ``(C, max label + 1)`` float64 means; NaN for labels with no pixel.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(8, dtype="uint16").reshape(2, 2, 2)
    >>> label_means(img, np.array([[1, 1], [0, 2]]))[:, 1:].tolist()
    [[0.5, 3.0], [4.5, 7.0]]
    """
    mask = _labels(mask)
    if tuple(image.shape[1:]) != mask.shape:
        raise InvalidArgumentError(f"image of shape {tuple(image.shape)} does not match its mask of shape {mask.shape}")
    height, width = mask.shape
    n_labels = int(mask.max()) + 1 if mask.size else 1
    n_channels = int(image.shape[0])
    if counts is None:
        counts = np.bincount(mask.ravel().astype(np.intp, copy=False), minlength=n_labels)
    sums = np.zeros((n_channels, n_labels), dtype=np.float64)
    for y0, y1 in _strips(height, width * max(n_channels, 1), _chunk_rows(image)):
        strip = np.asarray(image[:, y0:y1, :])
        labels = mask[y0:y1].astype(np.intp, copy=False).ravel()
        for c in range(n_channels):
            sums[c] += np.bincount(labels, weights=strip[c].ravel(), minlength=n_labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:n_labels]


def finest_mask_resolution(cohort: Cohort) -> float:
    """The finest resolution (lowest mpp) with segmentations: where the cell masks are (spec §3)."""
    available = cohort.mask_resolutions()
    if not available:
        raise CohortNotFoundError(
            f"{cohort.path / layout.SEGMENTATIONS_DIR}: not found; cell instance masks are needed"
        )
    return available[0]


@dataclass(frozen=True)
class _TissueJob:
    tissue_id: str
    image: str
    mask: str
    positions: tuple[int, ...]  # panel position of each channel of the image


def image_means(image_path: str | Path, mask: np.ndarray, mask_path: str | Path, n_channels: int) -> np.ndarray:
    """Per-label means of the stored image at ``image_path`` over ``mask``: ``(C, max label + 1)``.

    Checks that the image and the mask have the same height and width and that the image has the
    ``n_channels`` channels that ``channels_per_tissue.parquet`` lists for it.
    """
    image = open_image_levels(image_path)[0]
    if tuple(image.shape[1:]) != mask.shape:
        raise CohortFormatError(
            mask_path, "mask.shape", f"mask shape {mask.shape} differs from image shape {tuple(image.shape[1:])}"
        )
    if image.shape[0] != n_channels:
        raise CohortFormatError(
            image_path, "image.channels", f"{image.shape[0]} channels, but channels_per_tissue lists {n_channels}"
        )
    return label_means(image, _labels(mask, mask_path))


def _tissue_intensities(job: _TissueJob) -> tuple[np.ndarray, np.ndarray]:
    """``(cell_ids, means)`` of one tissue: means is ``(n_cells, n measured channels)``."""
    mask = _labels(read_mask(job.mask), job.mask)
    means = image_means(job.image, mask, job.mask, len(job.positions))
    counts = np.bincount(mask.ravel().astype(np.intp, copy=False))
    cell_ids = np.flatnonzero(counts)
    cell_ids = cell_ids[cell_ids > 0]
    return cell_ids, means[:, cell_ids].T


def _intensity_jobs(cohort: Cohort, modality: str, resolution: float, tissues: Sequence[str]) -> list[_TissueJob]:
    """One job per tissue that has both an image of ``modality`` and an instance mask at ``resolution``."""
    panel = cohort.panel(modality)
    index = {name: i for i, name in enumerate(panel)}
    jobs = []
    for tissue_id in tissues:
        image = cohort.paths.image(modality, resolution, tissue_id)
        mask = cohort.paths.instance_mask(resolution, tissue_id)
        if not image.exists() or not mask.is_file():
            missing = image if not image.exists() else mask
            logger.warning("%s: not found; no intensities for tissue %s", missing, tissue_id)
            continue
        positions = tuple(index[name] for name in cohort.tissue_channels(tissue_id, modality))
        jobs.append(_TissueJob(tissue_id, str(image), str(mask), positions))
    return jobs


def compute_cell_intensities(
    cohort: str | Path | Cohort,
    modality: str = "imc",
    resolution: float | None = None,
    tissues: Sequence[str] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Mean intensity of every channel over every cell of the instance masks, tissue by tissue.

    Parameters
    ----------
    cohort
        A cohort folder, dataset key, alias, or an opened :class:`~spora_sd.io.cohort.Cohort`.
    modality
        The multiplex modality whose images are measured.
    resolution
        Microns per pixel; the images and the instance masks must both exist there. Default: the
        finest resolution of the cell masks.
    tissues
        Tissue ids to measure (default: every tissue of ``modality``).
    progress
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        ``tissue_id`` (categorical), ``cell_id`` (int64), then one float64 column per channel of the
        cohort panel, NaN where a tissue lacks the channel. Rows are ordered by tissue, then
        ``cell_id``; a cell is every label present in its instance mask.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10)
    >>> df = compute_cell_intensities(root)
    >>> list(df.columns[:2])
    ['tissue_id', 'cell_id']
    """
    cohort = open_cohort(cohort)
    if modality not in cohort.multiplex_modalities:
        raise CohortNotFoundError(
            f"{cohort.path}: no multiplex modality {modality!r} (found: {cohort.multiplex_modalities or 'none'})"
        )
    mpp = float(resolution) if resolution is not None else finest_mask_resolution(cohort)
    tissue_ids = list(tissues) if tissues is not None else cohort.tissue_ids(modality)
    panel = cohort.panel(modality)
    jobs = _intensity_jobs(cohort, modality, mpp, tissue_ids)
    parts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(jobs)
    for i, result in imap_tissues(_tissue_intensities, jobs, progress=progress, description=f"intensities {modality}"):
        parts[i] = result
    sizes = [len(p[0]) for p in parts if p is not None]
    n = int(sum(sizes))
    values = np.full((n, len(panel)), np.nan, dtype=np.float64)
    cell_ids = np.empty(n, dtype=np.int64)
    codes = np.empty(n, dtype=np.int32)
    start = 0
    for code, (job, part) in enumerate(zip(jobs, parts, strict=True)):
        ids, means = part  # type: ignore[misc]  # every job has returned
        stop = start + len(ids)
        cell_ids[start:stop] = ids
        codes[start:stop] = code
        values[start:stop, list(job.positions)] = means
        start = stop
    columns: dict[str, Any] = {
        "tissue_id": pd.Categorical.from_codes(codes, categories=[j.tissue_id for j in jobs]),
        "cell_id": cell_ids,
    }
    columns.update({name: values[:, j] for j, name in enumerate(panel)})
    return pd.DataFrame(columns)
