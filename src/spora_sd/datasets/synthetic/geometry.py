"""Geometry of a synthetic tissue: the tissue mask, cell positions, cell types placed in tumour nests,
stroma and a lymphoid aggregate, and cells rasterised as touching, non-overlapping ellipses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spora_sd.datasets.synthetic.biology import _RIM, _TYPE_INDEX, _ZONE_CYTOPLASM, _ZONE_NUCLEUS, _ZONE_RIM

# --------------------------------------------------------------------------------------------------
# geometry


def _tissue_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A blob with a wavy border and a few holes, filling most of the field of view (as an IMC ROI)."""
    y = ((np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1)[:, None]
    x = ((np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1)[None, :]
    cy, cx = rng.uniform(-0.12, 0.12, 2)
    ry, rx = rng.uniform(0.85, 1.1, 2)
    dy, dx = (y - cy) / ry, (x - cx) / rx
    radius = np.hypot(dy, dx)
    # The wavy border r(angle) is tabulated once and looked up per pixel (cheaper than 5 cosines per pixel).
    angles = np.linspace(-np.pi, np.pi, 4097)
    border = np.ones_like(angles)
    for k in range(2, 7):
        border += rng.uniform(0, 0.07) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    where = np.rint((np.arctan2(dy, dx) + np.pi) * (4096 / (2 * np.pi))).astype(np.intp)
    mask = radius <= border.astype(np.float32)[where]
    for _ in range(int(rng.integers(0, 4))):  # lumens / tears
        hy, hx = rng.uniform(-0.6, 0.6, 2)
        hr = rng.uniform(0.04, 0.12)
        mask &= (y - hy) ** 2 + (x - hx) ** 2 > hr**2
    if not mask.any():
        mask[height // 2, width // 2] = True
    return mask


@dataclass
class _Cells:
    """Cell geometry: centres (pixels), semi-axes, orientation, type index."""

    y: np.ndarray
    x: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    types: np.ndarray

    def subset(self, keep: np.ndarray) -> _Cells:
        return _Cells(*(getattr(self, f)[keep] for f in ("y", "x", "a", "b", "theta", "types")))


def _place_cells(rng: np.random.Generator, tissue: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Cell centres on a strongly jittered staggered grid inside the tissue; returns (y, x, spacing).

    The grid spacing ``s`` makes about ``n_cells`` centres fall in the tissue; a jitter of up to 0.3 s
    per axis breaks the lattice while keeping centres spread like the nuclei of a real section.
    """
    height, width = tissue.shape
    area = max(int(tissue.sum()), 1)
    spacing = max(math.sqrt(area / max(n_cells, 1)), 1.0)
    gy, gx = np.meshgrid(
        np.arange(math.ceil(height / spacing) + 1), np.arange(math.ceil(width / spacing) + 1), indexing="ij"
    )
    gy, gx = gy.ravel().astype(np.float64), gx.ravel().astype(np.float64)
    jitter = rng.uniform(-0.3, 0.3, size=(2, gy.size))
    y = (gy + 0.5 + jitter[0]) * spacing
    x = (gx + 0.5 * (gy % 2) + jitter[1]) * spacing
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    y, x = y[inside], x[inside]
    in_tissue = tissue[y.astype(np.intp), x.astype(np.intp)]
    return y[in_tissue], x[in_tissue], spacing


def _bumps(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, size: float, n: int, sigma: tuple[float, float]):
    """Max over ``n`` Gaussian bumps at random places, evaluated at the points (y, x)."""
    field = np.zeros_like(y)
    for _ in range(n):
        by, bx = rng.uniform(0, size, 2)
        s = rng.uniform(*sigma) * size
        field = np.maximum(field, np.exp(-((y - by) ** 2 + (x - bx) ** 2) / (2 * s * s)))
    return field


def _cell_types(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Tumour nests, stroma around them, a lymphoid aggregate (B-cell core, T-cell rim), scattered macrophages."""
    size = float(max(height, width))
    nests = _bumps(rng, y, x, size, int(rng.integers(2, 5)), (0.12, 0.25))
    aggregate = _bumps(rng, y, x, size, 1, (0.08, 0.14))
    p_tumor = 0.92 / (1 + np.exp(-12 * (nests - 0.45)))
    weights = np.stack(
        [
            0.02 + 0.9 * aggregate**2,  # B cell
            0.12 + 0.6 * aggregate,  # T cell
            np.full_like(y, 0.14),  # macrophage
            np.full_like(y, 0.08),  # endothelial cell
            0.55 * (1 - aggregate),  # stromal cell
        ],
        axis=1,
    )
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    u_tumor, u_type = rng.random(y.size), rng.random(y.size)
    other = (cumulative < u_type[:, None]).sum(axis=1).clip(max=weights.shape[1] - 1)
    return np.where(u_tumor < p_tumor, _TYPE_INDEX["tumor cell"], other).astype(np.int64)


def _cell_shapes(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, types: np.ndarray, spacing: float) -> _Cells:
    a = rng.uniform(0.34, 0.5, y.size) * spacing
    b = rng.uniform(0.3, 0.46, y.size) * spacing
    small = np.isin(types, [_TYPE_INDEX["T cell"], _TYPE_INDEX["B cell"]])  # lymphocytes are small and round
    a[small] *= 0.75
    b[small] = a[small] * rng.uniform(0.85, 1.0, int(small.sum()))
    theta = rng.uniform(0, np.pi, y.size)
    return _Cells(y, x, a, b, theta, types)


def _rasterize(cells: _Cells, height: int, width: int) -> tuple[np.ndarray, np.ndarray, _Cells]:
    """Instance labels (1..N, in placement order) and zones (0 outside cells, 1 nucleus, 2 cytoplasm, 3 rim).

    A pixel belongs to the cell whose ellipse holds its centre; where ellipses overlap, to the one in
    whose ellipse it lies deepest (smallest normalised radius), which gives touching cells with
    straight shared borders as in a segmentation. The rim is the outer part of the ellipse plus every
    pixel next to another cell or the background. Cells left without a pixel are dropped, so labels
    are exactly 1..N.
    """
    labels = np.zeros((height, width), dtype=np.uint32)
    zones = np.zeros((height, width), dtype=np.uint8)
    n = cells.y.size
    if n == 0:
        return labels, zones, cells
    reach = int(math.ceil(max(cells.a.max(), cells.b.max()))) + 1
    offsets = np.arange(-reach, reach + 1)
    dy = np.repeat(offsets, offsets.size)[None, :]
    dx = np.tile(offsets, offsets.size)[None, :]
    py = np.floor(cells.y).astype(np.intp)[:, None] + dy
    px = np.floor(cells.x).astype(np.intp)[:, None] + dx
    ry = (py + 0.5 - cells.y[:, None]).astype(np.float32)
    rx = (px + 0.5 - cells.x[:, None]).astype(np.float32)
    cos, sin = np.cos(cells.theta)[:, None].astype(np.float32), np.sin(cells.theta)[:, None].astype(np.float32)
    u = (rx * cos + ry * sin) / cells.a[:, None].astype(np.float32)
    v = (ry * cos - rx * sin) / cells.b[:, None].astype(np.float32)
    r2 = u * u + v * v
    inside = (r2 <= 1) & (py >= 0) & (py < height) & (px >= 0) & (px < width)
    cell = np.broadcast_to(np.arange(n)[:, None], inside.shape)[inside]
    pixel = (py * width + px)[inside]
    depth = r2[inside]
    # For each pixel keep the candidate with the smallest normalised radius: sort on one int64 key,
    # pixel in the high bits and the float32 depth's bits (monotonic for positive floats) in the low.
    key = (pixel.astype(np.int64) << 32) | depth.view(np.uint32).astype(np.int64)
    order = np.argsort(key)
    sorted_pixel = pixel[order]
    first = np.flatnonzero(np.r_[True, sorted_pixel[1:] != sorted_pixel[:-1]])
    win = order[first]
    cell, pixel, depth = cell[win], pixel[win], depth[win]
    labels.ravel()[pixel] = cell + 1
    nucleus = np.where(cells.types == _TYPE_INDEX["tumor cell"], 0.62, 0.5).astype(np.float32) ** 2
    zone = np.where(depth <= nucleus[cell], _ZONE_NUCLEUS, np.where(depth > _RIM**2, _ZONE_RIM, _ZONE_CYTOPLASM))
    zones.ravel()[pixel] = zone
    border = np.zeros((height, width), dtype=bool)
    border[1:, :] |= labels[1:, :] != labels[:-1, :]
    border[:-1, :] |= labels[:-1, :] != labels[1:, :]
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    zones[border & (zones == _ZONE_CYTOPLASM)] = _ZONE_RIM
    present = np.bincount(labels.ravel(), minlength=n + 1)[1:] > 0
    if not present.all():
        lut = np.zeros(n + 1, dtype=np.uint32)
        lut[1:][present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
        labels = lut[labels]
        cells = cells.subset(present)
    return labels, zones, cells
