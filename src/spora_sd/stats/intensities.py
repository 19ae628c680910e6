"""Per-cell statistics from the instance masks: pixel counts, centroids, mean intensities.

Everything here is a weighted :func:`numpy.bincount` over the instance mask's labels, one tissue at a
time and one strip of rows at a time, so memory stays at one mask plus one strip of the image whatever
the cohort size. Results are compact: arrays aligned with the mask's sorted distinct labels (the cell
ids), never indexed by the label value, so a mask whose labels are few but huge (a cell labelled
4,000,000,000) costs what its cells cost (:class:`LabelIndex`).

Examples
--------
>>> import numpy as np
>>> mask = np.array([[0, 1, 1], [2, 2, 0]], dtype="uint32")
>>> labels, counts, cy, cx = label_centroids(mask)
>>> labels.tolist(), counts.tolist(), cy.tolist(), cx.tolist()
([1, 2], [2, 2], [0.0, 1.0], [1.5, 0.5])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError
from spora_sd.io.cohort import Cohort, open_cohort
from spora_sd.io.images import check_image_metadata, open_level, read_image_metadata
from spora_sd.io.masks import read_mask
from spora_sd.io.memory import returns_free_memory
from spora_sd.stats.parallel import imap_tissues

__all__ = ["LabelIndex", "compute_cell_intensities", "image_means", "label_centroids", "label_means"]

logger = logging.getLogger(__name__)

# Rows per strip: about 4 million pixels, so that the float64 weights of one strip stay near 32 MB.
_STRIP_PIXELS = 1 << 22
# A lookup table label -> position is used while it has at most max(this, pixels / 8) entries: its size
# is bounded by the mask's own, never by a label value alone. Beyond, positions come from a binary search.
_LOOKUP_MIN = 1 << 20


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


class LabelIndex:
    """The distinct nonzero labels of an instance mask, sorted, and the position of any of them.

    Per-label statistics are accumulated at positions ``0 .. len(labels) - 1``, so their size is the
    number of cells, whatever the label values. Positions come from a lookup table when the largest
    label is at most ``max(2**20, pixels / 8)`` (the usual ``1..N`` labels: one gather per pixel), else
    from a binary search in ``labels``.

    Examples
    --------
    >>> import numpy as np
    >>> index = LabelIndex(np.array([[0, 4_000_000_000], [7, 7]], dtype="uint32"))
    >>> index.labels.tolist(), index.positions(np.array([7, 4_000_000_000])).tolist()
    ([7, 4000000000], [0, 1])
    """

    def __init__(self, mask: np.ndarray, path: Any = "mask") -> None:
        mask = _labels(mask, path)  # path: the file named when the mask is refused
        height, width = mask.shape
        top = int(mask.max()) if mask.size else 0
        self._lookup: np.ndarray | None = None
        if top < max(_LOOKUP_MIN, mask.size // 8):
            present = np.zeros(top + 1, dtype=bool)
            for y0, y1 in _strips(height, width):
                present[mask[y0:y1].ravel()] = True
            present[0] = False
            labels = np.flatnonzero(present)
            self._lookup = np.full(top + 1, -1, dtype=np.intp)
            self._lookup[labels] = np.arange(len(labels), dtype=np.intp)
        else:
            parts = [np.unique(mask[y0:y1]) for y0, y1 in _strips(height, width)]
            labels = np.unique(np.concatenate(parts)).astype(np.int64, copy=False)
            labels = labels[labels != 0]
        self.labels: np.ndarray = labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.labels)

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Positions in :attr:`labels` of ``values``, which must be nonzero labels of the mask."""
        if self._lookup is not None:
            return self._lookup[values]
        return np.searchsorted(self.labels, values).astype(np.intp, copy=False)


def label_centroids(
    mask: np.ndarray, index: LabelIndex | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel count and mean row / column of every label of an instance mask.

    Parameters
    ----------
    mask
        ``(Y, X)`` instance mask, 0 = background.
    index
        ``LabelIndex(mask)`` when already made.

    Returns
    -------
    labels, counts, mean_y, mean_x
        The sorted distinct nonzero labels and, aligned with them, their pixel counts and mean pixel
        indices (the centre of pixel ``(i, j)`` is ``(i, j)``).

    Examples
    --------
    >>> import numpy as np
    >>> labels, counts, cy, cx = label_centroids(np.array([[3, 3], [0, 3]], dtype="uint16"))
    >>> labels.tolist(), counts.tolist(), cy.tolist(), cx.tolist()
    ([3], [3], [0.3333333333333333], [0.6666666666666666])
    """
    mask = _labels(mask)
    index = LabelIndex(mask) if index is None else index
    height, width = mask.shape
    n = len(index)
    counts = np.zeros(n, dtype=np.int64)
    sum_y = np.zeros(n, dtype=np.float64)
    sum_flat = np.zeros(n, dtype=np.float64)  # of y * width + x: sum_x follows, with one bincount less
    for y0, y1 in _strips(height, width):
        strip = mask[y0:y1].ravel()
        # Foreground pixels only: the background needs no coordinates, and cells cover a fraction of
        # a tissue, so this is less work than weighting every pixel (and no full-size weight arrays).
        where = np.flatnonzero(strip)
        positions = index.positions(strip[where])
        where += y0 * width
        counts += np.bincount(positions, minlength=n)
        sum_flat += np.bincount(positions, weights=where, minlength=n)
        sum_y += np.bincount(positions, weights=where // width, minlength=n)
    # Integer sums below 2**53 are exact in float64, so sum_x is exact too.
    sum_x = sum_flat - width * sum_y
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_y, mean_x = sum_y / counts, sum_x / counts
    return index.labels, counts, mean_y, mean_x


def label_means(image: Any, mask: np.ndarray, index: LabelIndex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean of every channel of ``image`` over every label of ``mask``.

    The image is read one strip of rows at a time (whole Zarr chunks when it is a dask array over
    Zarr), so only one strip of all channels is in memory.

    Parameters
    ----------
    image
        ``(C, Y, X)`` array: numpy, dask or zarr.
    mask
        ``(Y, X)`` instance mask of the same height and width.
    index
        ``LabelIndex(mask)`` when already made.

    Returns
    -------
    labels, means
        The sorted distinct nonzero labels, and the ``(C, len(labels))`` float64 means over them.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(8, dtype="uint16").reshape(2, 2, 2)
    >>> labels, means = label_means(img, np.array([[1, 1], [0, 2]]))
    >>> labels.tolist(), means.tolist()
    ([1, 2], [[0.5, 3.0], [4.5, 7.0]])
    """
    mask = _labels(mask)
    if tuple(image.shape[1:]) != mask.shape:
        raise InvalidArgumentError(f"image of shape {tuple(image.shape)} does not match its mask of shape {mask.shape}")
    index = LabelIndex(mask) if index is None else index
    height, width = mask.shape
    n = len(index)
    n_channels = int(image.shape[0])
    counts = np.zeros(n, dtype=np.int64)
    sums = np.zeros((n_channels, n), dtype=np.float64)
    for y0, y1 in _strips(height, width * max(n_channels, 1), _chunk_rows(image)):
        strip = np.asarray(image[:, y0:y1, :]).reshape(n_channels, -1)
        labels = mask[y0:y1].ravel()
        where = np.flatnonzero(labels)
        positions = index.positions(labels[where])
        counts += np.bincount(positions, minlength=n)
        for c in range(n_channels):
            sums[c] += np.bincount(positions, weights=strip[c][where], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return index.labels, sums / counts


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
    channels: tuple[str, ...] | None = None  # the image's channel names, from the tables
    mpp: float | None = None
    on_mismatch: Literal["raise", "warn"] = "raise"


def image_means(
    image_path: str | Path,
    mask: np.ndarray,
    mask_path: str | Path,
    n_channels: int,
    *,
    channel_names: Sequence[str] | None = None,
    mpp: float | None = None,
    on_mismatch: Literal["raise", "warn"] = "raise",
    index: LabelIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-label means of the stored image at ``image_path`` over ``mask``: ``labels, (C, len(labels))``.

    Checks that the image and the mask have the same height and width and that the image has the
    ``n_channels`` channels that ``channels_per_tissue.parquet`` lists for it; with ``channel_names``
    and ``mpp``, also that its OME metadata names those channels in that order and has that scale
    (:func:`spora_sd.io.images.check_image_metadata`), so a mean is never filed under another channel.

    Only level 0 is opened, and it is read through Zarr without dask: a tissue is one small read per
    strip, and a dask graph and thread pool per tissue cost more than the read itself on a cohort of
    small images (and made the per-tissue time grow with the machine's load).
    """
    meta = read_image_metadata(image_path)
    image = open_level(image_path, meta.level_paths[0])  # checked: Zarr v3, (c, y, x), dtype, size
    if tuple(image.shape[1:]) != mask.shape:
        raise CohortFormatError(
            mask_path, "mask.shape", f"mask shape {mask.shape} differs from image shape {tuple(image.shape[1:])}"
        )
    if image.shape[0] != n_channels:
        raise CohortFormatError(
            image_path, "image.channels", f"{image.shape[0]} channels, but channels_per_tissue lists {n_channels}"
        )
    check_image_metadata(meta, mpp=mpp, channel_names=channel_names, on_mismatch=on_mismatch)
    return label_means(image, _labels(mask, mask_path), index)


def _tissue_intensities(job: _TissueJob) -> tuple[np.ndarray, np.ndarray]:
    """``(cell_ids, means)`` of one tissue: means is ``(n_cells, n measured channels)``."""
    mask = _labels(read_mask(job.mask), job.mask)
    cell_ids, means = image_means(
        job.image,
        mask,
        job.mask,
        len(job.positions),
        channel_names=job.channels,
        mpp=job.mpp,
        on_mismatch=job.on_mismatch,
    )
    return cell_ids, means.T


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
        channels = cohort.tissue_channels(tissue_id, modality)
        positions = tuple(index[name] for name in channels)
        jobs.append(
            _TissueJob(
                tissue_id, str(image), str(mask), positions, tuple(channels), float(resolution), cohort.on_mismatch
            )
        )
    return jobs


@returns_free_memory
def compute_cell_intensities(
    cohort: str | Path | Cohort,
    modality: str = "imc",
    resolution: float | None = None,
    tissues: Sequence[str] | None = None,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
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
    storage_options
        Options of the remote filesystem when ``cohort`` is remote (see :func:`spora_sd.open_cohort`).

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
    cohort = open_cohort(cohort, storage_options=storage_options)
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
    return _frame(jobs, parts, panel)


def _frame(jobs: list[_TissueJob], parts: list[Any], panel: Sequence[str]) -> pd.DataFrame:
    """The tissues' results as one frame, each part dropped once copied (``parts`` is emptied).

    The channel values are one ``(channels, cells)`` block that becomes the frame's own float64 block
    without a copy (a dict of columns would be stacked into a second one): at 6 M cells and 3
    channels the result costs its 210 MB, not twice that.
    """
    n = int(sum(len(p[0]) for p in parts))
    values = np.full((len(panel), n), np.nan, dtype=np.float64)
    cell_ids = np.empty(n, dtype=np.int64)
    codes = np.empty(n, dtype=np.int32)
    start = 0
    for code, job in enumerate(jobs):
        ids, means = parts[code]  # every job has returned
        parts[code] = None
        stop = start + len(ids)
        cell_ids[start:stop] = ids
        codes[start:stop] = code
        values[list(job.positions), start:stop] = means.T
        start = stop
    frame = pd.DataFrame(values.T, columns=list(panel), copy=False)
    frame.insert(0, "cell_id", cell_ids)
    frame.insert(0, "tissue_id", pd.Categorical.from_codes(codes, categories=[j.tissue_id for j in jobs]))
    return frame
