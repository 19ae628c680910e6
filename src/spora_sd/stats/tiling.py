"""Tilings of a cohort's tissue masks (spec §8), vectorised and one tissue at a time.

A tiling lists the top-left corner ``(row, col)`` of every ``tile_size x tile_size`` tile that holds
enough tissue, and per tissue how many tiles there are and how much of the tissue they cover:

- ``default``: tiles on a grid of step ``stride`` that lie fully inside the image; when the image
  side is not ``tile_size`` plus a multiple of the stride, one more tile flush with the bottom/right
  edge is added so that the border is covered too (those tiles overlap their neighbour).
- ``grid``: a grid of step ``stride`` that covers the whole image; tiles at the bottom/right may reach
  past the edge, where readers zero-pad them (those pixels count as background).

Tissue counts per tile come from column sums of one band of rows at a time, so memory stays at a few
rows of the mask even for whole-slide masks.

Examples
--------
>>> tile_starts(600, 256, 256, "default").tolist()
[0, 256, 344]
>>> tile_starts(600, 256, 256, "grid").tolist()
[0, 256, 512]
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.errors import CohortNotFoundError, InvalidArgumentError, TargetExistsError
from spora_sd.io.cohort import Cohort, open_cohort
from spora_sd.io.manifest import update_manifest
from spora_sd.io.masks import read_mask
from spora_sd.io.remote import is_file
from spora_sd.io.tables import write_table
from spora_sd.stats.parallel import map_tissues

__all__ = ["STRATEGIES", "compute_tiling", "tile_starts", "tile_tissue_fraction", "tiles_coverage"]

logger = logging.getLogger(__name__)

STRATEGIES = ("default", "grid")


def _is_fraction(value: object) -> bool:
    """Whether ``value`` is a number in [0, 1] (not a bool, not a string).

    >>> _is_fraction(0.5), _is_fraction(1), _is_fraction("0.5"), _is_fraction(1.5), _is_fraction(True)
    (True, True, False, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0


def tile_starts(length: int, tile_size: int, stride: int, strategy: str = "default") -> np.ndarray:
    """Start offsets of the tiles along one image side of ``length`` pixels.

    Examples
    --------
    >>> tile_starts(100, 256, 256, "default").tolist()  # the image is smaller than a tile
    []
    >>> tile_starts(512, 256, 128, "default").tolist()
    [0, 128, 256]
    """
    if strategy == "grid":
        return np.arange(0, max(length, 0), stride, dtype=np.int64)
    if strategy != "default":
        raise InvalidArgumentError(f"unknown tiling strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if length < tile_size:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, length - tile_size + 1, stride, dtype=np.int64)
    if starts[-1] != length - tile_size:
        starts = np.append(starts, length - tile_size)  # flush with the edge, so the border is covered
    return starts


def tile_tissue_fraction(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile_size: int) -> np.ndarray:
    """Fraction of tissue pixels in every tile ``(rows[i], cols[j])``: an array of shape ``(len(rows), len(cols))``.

    Pixels of a tile that lie outside the mask count as background (they are zero-padded by readers).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((4, 4), bool); m[:2, :2] = True
    >>> tile_tissue_fraction(m, np.array([0, 2]), np.array([0, 2]), 2).tolist()
    [[1.0, 0.0], [0.0, 0.0]]
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    out = np.zeros((len(rows), len(cols)), dtype=np.int64)
    if len(cols) == 0:
        return out.astype(np.float64)
    padded_width = max(width, int(cols.max()) + tile_size)
    for i, row in enumerate(rows):
        column_sums = np.zeros(padded_width + 1, dtype=np.int64)
        # Column sums of the band of rows under this tile row; their running sum gives every tile's
        # count with two lookups.
        column_sums[1 : width + 1] = mask[row : min(row + tile_size, height)].sum(axis=0, dtype=np.int64)
        cumulative = np.cumsum(column_sums)
        out[i] = cumulative[cols + tile_size] - cumulative[cols]
    return out / float(tile_size * tile_size)


def tiles_coverage(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile_size: int) -> float:
    """Fraction of the mask's tissue pixels covered by at least one of the tiles ``(rows[k], cols[k])``.

    An empty mask is fully covered (``1.0``), as the tile-stats schema says.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((4, 4), bool); m[0, 0] = m[3, 3] = True
    >>> tiles_coverage(m, np.array([0]), np.array([0]), 2)
    0.5
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    total = int(mask.sum())
    if total == 0:
        return 1.0
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if rows.size == 0:
        return 0.0
    # The set of tiles over a pixel row only changes where a tile starts or ends, so the rows between
    # two such breakpoints share one covered-column profile.
    breaks = np.unique(np.clip(np.concatenate([[0, height], rows, rows + tile_size]), 0, height))
    covered = 0
    for y0, y1 in zip(breaks[:-1], breaks[1:], strict=True):
        active = (rows <= y0) & (rows + tile_size >= y1)
        if not active.any():
            continue
        delta = np.zeros(width + 1, dtype=np.int64)
        np.add.at(delta, np.clip(cols[active], 0, width), 1)
        np.add.at(delta, np.clip(cols[active] + tile_size, 0, width), -1)
        columns = np.cumsum(delta[:width]) > 0
        covered += int(mask[y0:y1].sum(axis=0, dtype=np.int64)[columns].sum())
    return covered / total


@dataclass(frozen=True)
class _TileJob:
    tissue_id: str
    mask: str
    tile_size: int
    stride: int
    strategy: str
    min_tissue: float


def _tile_one(job: _TileJob) -> tuple[np.ndarray, np.ndarray, dict]:
    mask = read_mask(job.mask).astype(bool, copy=False)
    height, width = mask.shape
    rows = tile_starts(height, job.tile_size, job.stride, job.strategy)
    cols = tile_starts(width, job.tile_size, job.stride, job.strategy)
    fraction = tile_tissue_fraction(mask, rows, cols, job.tile_size)
    keep_r, keep_c = np.nonzero(fraction >= job.min_tissue)  # row-major: tile ids run along rows
    tile_rows, tile_cols = rows[keep_r], cols[keep_c]
    stats = {
        "num_tiles": int(tile_rows.size),
        "coverage_ratio": float(tiles_coverage(mask, tile_rows, tile_cols, job.tile_size)),
        "tile_size": job.tile_size,
        "stride": job.stride,
        "min_tissue": job.min_tissue,
        "strategy": job.strategy,
        "mask_height": height,
        "mask_width": width,
    }
    return tile_rows, tile_cols, stats


def compute_tiling(
    cohort: str | Path | Cohort,
    tile_size: int = 256,
    strategy: str = "default",
    stride: int | None = None,
    min_tissue: float = 0.5,
    resolution: float | None = None,
    overwrite: bool = True,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
    output: str | Path | None = None,
) -> Path:
    """Compute the tiles of every tissue mask and write the spec §8 tables.

    Writes ``tiling/<res>/<strategy>/<tile_size>_tile_coordinates.parquet`` (``tissue_id, tile_id, row,
    col``: the top-left pixel of each kept tile, ``tile_id`` counting 0, 1, ... row-major within a
    tissue) and ``<tile_size>_tile_stats.parquet`` (index ``tissue_id``: ``num_tiles``,
    ``coverage_ratio`` = fraction of the tissue-mask pixels covered by a kept tile (1.0 for an empty
    mask), the parameters ``tile_size, stride, min_tissue, strategy``, and ``mask_height, mask_width``).

    Parameters
    ----------
    cohort
        A cohort folder, dataset key, alias, or an opened :class:`~spora_sd.io.cohort.Cohort`
        (anything :func:`spora_sd.open_cohort` accepts).
    tile_size
        Side of the square tiles, in pixels.
    strategy
        ``"default"`` (tiles inside the image, plus one flush with each far edge) or ``"grid"`` (a grid
        covering the whole image; edge tiles may reach past it and are zero-padded by readers).
    stride
        Step between tile starts; default ``tile_size`` (no overlap).
    min_tissue
        Keep a tile when at least this fraction of its ``tile_size**2`` pixels is tissue (0 keeps all).
    resolution
        Microns per pixel of the tissue masks; default the finest stored.
    overwrite
        Replace existing tables (else :class:`~spora_sd.errors.TargetExistsError`).
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
        The tile-coordinates file (the stats file sits next to it).

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=96, n_cells=10,
    ...                                       standardization=False, tiling=False)
    >>> compute_tiling(root, tile_size=32, strategy="grid").relative_to(root).as_posix()
    'tiling/1_0mpp/grid/32_tile_coordinates.parquet'
    """
    cohort = open_cohort(cohort, storage_options=storage_options)
    target = cohort.output_paths(output)  # a remote cohort is read, never written: output= a local folder
    if isinstance(tile_size, bool) or not isinstance(tile_size, int | np.integer) or tile_size <= 0:
        raise InvalidArgumentError(f"tile_size must be a positive integer, got {tile_size!r}")
    tile_size = int(tile_size)
    stride = tile_size if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride <= 0:
        raise InvalidArgumentError(f"stride must be a positive integer, got {stride!r}")
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"unknown tiling strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if not _is_fraction(min_tissue):
        raise InvalidArgumentError(f"min_tissue must be a fraction in [0, 1], got {min_tissue!r}")
    if resolution is None:
        available = cohort.mask_resolutions()
        if not available:
            raise CohortNotFoundError(f"{cohort.path / layout.SEGMENTATIONS_DIR}: no tissue masks to tile")
        resolution = available[0]
    mpp = float(resolution)
    coordinates_file = target.tile_coordinates(mpp, strategy, tile_size)
    stats_file = target.tile_stats(mpp, strategy, tile_size)
    if not overwrite and (coordinates_file.exists() or stats_file.exists()):
        raise TargetExistsError(f"{coordinates_file} exists; pass overwrite=True to replace it")

    jobs, missing = [], []
    for tissue_id in cohort.tissue_ids():
        mask = cohort.paths.tissue_mask(mpp, tissue_id)
        if is_file(mask):
            jobs.append(_TileJob(tissue_id, str(mask), tile_size, int(stride), strategy, float(min_tissue)))
        else:
            missing.append(mask)
    if missing:
        logger.warning(
            "%d tissue(s) have no tissue mask at %s mpp and are not tiled (first: %s)", len(missing), mpp, missing[0]
        )
    if not jobs:
        raise CohortNotFoundError(f"{cohort.paths.tissue_masks_dir(mpp)}: no tissue mask of a listed tissue")

    results = map_tissues(_tile_one, jobs, progress=progress, description=f"tiling {strategy} {tile_size}px")
    n_tiles = [len(rows) for rows, _, _ in results]
    coordinates = pd.DataFrame(
        {
            "tissue_id": np.repeat([job.tissue_id for job in jobs], n_tiles).astype(object),
            "tile_id": np.concatenate([np.arange(n, dtype=np.int64) for n in n_tiles]),
            "row": np.concatenate([rows for rows, _, _ in results]).astype(np.int64),
            "col": np.concatenate([cols for _, cols, _ in results]).astype(np.int64),
        }
    )
    stats = pd.DataFrame([s for _, _, s in results], index=pd.Index([j.tissue_id for j in jobs], name="tissue_id"))
    write_table(coordinates, coordinates_file, "tile_coordinates", index=False, dataset=cohort.dataset)
    write_table(stats, stats_file, "tile_stats", dataset=cohort.dataset)
    update_manifest(target.root, [coordinates_file, stats_file])  # a cohort exported with a manifest keeps it current
    logger.info("wrote %s (%d tiles over %d tissues)", coordinates_file, int(sum(n_tiles)), len(jobs))
    return coordinates_file
