"""Synthetic spora cohorts that look like real ones, for tests, demos and benchmarks.

:func:`make_synthetic_cohort` writes a complete, valid cohort: tissues with cells drawn as
touching, non-overlapping ellipses, cell types placed in tumour nests, stroma and a lymphoid aggregate, an IMC
panel of real markers whose expression depends on the cell type (gamma-distributed per cell, with
pixel shot noise), a registered H&E rendered from the same cells, masks, the cells table with mean
intensities measured on the written images, clinical columns, standardization statistics and a tiling.

Everything is drawn from ``numpy.random.SeedSequence([seed, ...])`` streams, one per tissue, so a
seed gives the same pixels and tables whatever the order (or the dask workers) the tissues are
rendered in. Rendering is vectorised over cells and pixels, and tissues are written one at a time
(one tissue's arrays in memory).

Examples
--------
>>> import tempfile
>>> from spora_sd.io.cohort import open_cohort
>>> root = make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=96, n_cells=20, seed=1)
>>> cohort = open_cohort(root)
>>> cohort.modalities
['he', 'imc']
>>> cohort.panel("imc")[:4]
['DNA1', 'H3C1', 'PTPRC', 'CD3E']
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.errors import InvalidArgumentError, TargetExistsError
from spora_sd.io.atomic import TMP_MARKER, remove_path, replace_path
from spora_sd.io.images import build_pyramid, write_image
from spora_sd.io.masks import write_mask
from spora_sd.io.tables import write_table
from spora_sd.layout import CohortPaths
from spora_sd.stats.parallel import map_tissues

__all__ = ["CELL_TYPES", "MARKERS", "CellType", "Marker", "make_synthetic_cohort"]

logger = logging.getLogger(__name__)

DEFAULT_NAME = "synthetic2025cohort"
CELL_TYPES_TASK = "cell_types"


@dataclass(frozen=True)
class CellType:
    """A cell type of the synthetic tissues: its name (the ``cell_types`` label) and coarse category."""

    name: str
    category: str


#: Cell types, in label-encoder order (values 1, 2, ...).
CELL_TYPES: tuple[CellType, ...] = (
    CellType("B cell", "immune"),
    CellType("T cell", "immune"),
    CellType("macrophage", "immune"),
    CellType("endothelial cell", "stromal"),
    CellType("stromal cell", "stromal"),
    CellType("tumor cell", "tumor"),
)
_TYPE_INDEX = {t.name: i for i, t in enumerate(CELL_TYPES)}
_ALL = tuple(t.name for t in CELL_TYPES)

# Where in the cell a marker's signal sits: relative intensity in (background, nucleus, cytoplasm, rim).
_PROFILES = {
    "nuclear": (0.0, 1.0, 0.12, 0.05),
    "cytoplasm": (0.0, 0.35, 1.0, 0.8),
    "membrane": (0.0, 0.25, 0.55, 1.0),
}
_ZONE_NUCLEUS, _ZONE_CYTOPLASM, _ZONE_RIM = 1, 2, 3
_RIM = 0.72  # normalised radius beyond which a pixel is the membrane rim


@dataclass(frozen=True)
class Marker:
    """One channel of the synthetic panel.

    Attributes
    ----------
    name
        HUGO symbol (``DNA1``/``DNA2`` are the iridium DNA intercalator channels of IMC: no protein).
    uniprot_id
        UniProt accession, ``""`` for a channel that is not a protein.
    entry_name
        Swiss-Prot entry name of the accession (the tests check both against the shipped UniProt release).
    localisation
        ``"nuclear"``, ``"cytoplasm"`` or ``"membrane"``.
    expression
        Cell type -> (mean ion counts of an expressing cell, fraction of that type's cells expressing).
    background
        Mean counts of a pixel outside cells.
    """

    name: str
    uniprot_id: str
    entry_name: str
    localisation: str
    expression: tuple[tuple[str, float, float], ...]
    background: float = 0.3

    @property
    def is_nuclear_marker(self) -> bool:
        return self.localisation == "nuclear"


def _m(name: str, acc: str, entry: str, loc: str, *expr: tuple[str, float, float], bg: float = 0.3) -> Marker:
    return Marker(name, acc, entry, loc, tuple(expr), bg)


def _everyone(mean: float) -> tuple[tuple[str, float, float], ...]:
    return tuple((t, mean, 1.0) for t in _ALL)


# The panel in priority order: a panel of n channels takes the first n. Accessions are checked against
# the UniProt release that cellxgene-ontology-guide ships (see tests/test_synthetic.py).
MARKERS: tuple[Marker, ...] = (
    _m("DNA1", "", "", "nuclear", *_everyone(45.0), bg=0.5),
    _m("H3C1", "P68431", "H31_HUMAN", "nuclear", *_everyone(28.0)),
    _m("PTPRC", "P08575", "PTPRC_HUMAN", "membrane", ("T cell", 22, 1), ("B cell", 22, 1), ("macrophage", 14, 1)),
    _m("CD3E", "P07766", "CD3E_HUMAN", "membrane", ("T cell", 26, 0.95)),
    _m("MS4A1", "P11836", "CD20_HUMAN", "membrane", ("B cell", 26, 0.95)),
    _m("CD68", "P34810", "CD68_HUMAN", "cytoplasm", ("macrophage", 24, 0.95)),
    _m("KRT5", "P13647", "K2C5_HUMAN", "cytoplasm", ("tumor cell", 16, 0.6)),
    _m(
        "VIM",
        "P08670",
        "VIME_HUMAN",
        "cytoplasm",
        ("stromal cell", 24, 0.95),
        ("endothelial cell", 16, 0.9),
        ("macrophage", 8, 0.6),
    ),
    _m("CDH1", "P12830", "CADH1_HUMAN", "membrane", ("tumor cell", 20, 0.9)),
    _m("CD8A", "P01732", "CD8A_HUMAN", "membrane", ("T cell", 14, 0.4)),
    _m("ACTA2", "P62736", "ACTA_HUMAN", "cytoplasm", ("stromal cell", 20, 0.7), ("endothelial cell", 6, 0.3)),
    _m("MKI67", "P46013", "KI67_HUMAN", "nuclear", ("tumor cell", 12, 0.3), ("T cell", 6, 0.05), ("B cell", 6, 0.1)),
    _m("CD4", "P01730", "CD4_HUMAN", "membrane", ("T cell", 12, 0.6), ("macrophage", 4, 0.5)),
    _m("PECAM1", "P16284", "PECA1_HUMAN", "membrane", ("endothelial cell", 24, 0.95)),
    _m("KRT8", "P05787", "K2C8_HUMAN", "cytoplasm", ("tumor cell", 24, 0.9)),
    _m("KRT18", "P05783", "K1C18_HUMAN", "cytoplasm", ("tumor cell", 20, 0.9)),
    _m("CD163", "Q86VB7", "C163A_HUMAN", "membrane", ("macrophage", 15, 0.6)),
    _m(
        "HLA-DRA",
        "P01903",
        "DRA_HUMAN",
        "membrane",
        ("macrophage", 20, 0.9),
        ("B cell", 15, 0.9),
        ("tumor cell", 4, 0.3),
    ),
    _m("FOXP3", "Q9BZS1", "FOXP3_HUMAN", "nuclear", ("T cell", 9, 0.1)),
    _m("CD19", "P15391", "CD19_HUMAN", "membrane", ("B cell", 15, 0.9)),
    _m("ITGAX", "P20702", "ITAX_HUMAN", "membrane", ("macrophage", 10, 0.5)),
    _m("COL1A1", "P02452", "CO1A1_HUMAN", "cytoplasm", ("stromal cell", 15, 0.8)),
    _m("EPCAM", "P16422", "EPCAM_HUMAN", "membrane", ("tumor cell", 20, 0.9)),
    _m("ESR1", "P03372", "ESR1_HUMAN", "nuclear", ("tumor cell", 14, 0.7)),
    _m("GZMB", "P10144", "GRAB_HUMAN", "cytoplasm", ("T cell", 8, 0.2)),
    _m("CD274", "Q9NZQ7", "PD1L1_HUMAN", "membrane", ("tumor cell", 5, 0.3), ("macrophage", 6, 0.4)),
    _m("KRT19", "P08727", "K1C19_HUMAN", "cytoplasm", ("tumor cell", 18, 0.85)),
    _m("CD34", "P28906", "CD34_HUMAN", "membrane", ("endothelial cell", 15, 0.9)),
    _m("FN1", "P02751", "FINC_HUMAN", "cytoplasm", ("stromal cell", 12, 0.8)),
    _m("ERBB2", "P04626", "ERBB2_HUMAN", "membrane", ("tumor cell", 10, 0.3)),
    _m("TP53", "P04637", "P53_HUMAN", "nuclear", ("tumor cell", 8, 0.4)),
    _m("PGR", "P06401", "PRGR_HUMAN", "nuclear", ("tumor cell", 8, 0.5)),
    _m("CD14", "P08571", "CD14_HUMAN", "membrane", ("macrophage", 10, 0.7)),
    _m(
        "CD44", "P16070", "CD44_HUMAN", "membrane", ("stromal cell", 8, 0.6), ("tumor cell", 5, 0.5), ("T cell", 5, 0.5)
    ),
    _m("KRT7", "P08729", "K2C7_HUMAN", "cytoplasm", ("tumor cell", 14, 0.7)),
    _m("KRT14", "P02533", "K1C14_HUMAN", "cytoplasm", ("tumor cell", 9, 0.3)),
    _m("GATA3", "P23771", "GATA3_HUMAN", "nuclear", ("tumor cell", 10, 0.7), ("T cell", 3, 0.3)),
    _m("CD38", "P28907", "CD38_HUMAN", "membrane", ("B cell", 9, 0.5), ("T cell", 3, 0.2)),
    _m("B2M", "P61769", "B2MG_HUMAN", "membrane", *_everyone(8.0)),
    _m("PDPN", "Q86YL7", "PDPN_HUMAN", "membrane", ("stromal cell", 9, 0.4)),
    _m("ITGAM", "P11215", "ITAM_HUMAN", "membrane", ("macrophage", 10, 0.6)),
    _m("CASP3", "P42574", "CASP3_HUMAN", "cytoplasm", *((t, 4.0, 0.05) for t in _ALL)),
    _m("PDCD1", "Q15116", "PDCD1_HUMAN", "membrane", ("T cell", 7, 0.15)),
    _m("DNA2", "", "", "nuclear", *_everyone(42.0), bg=0.5),
)
_MARKER_INDEX = {m.name: i for i, m in enumerate(MARKERS)}

# H&E colours (RGB): outside tissue, extracellular matrix, cytoplasm, tumour cytoplasm, nuclei of
# lymphocytes (dense, dark), of tumour cells (large, purple) and of other cells.
_HE_PALETTE = np.array(
    [
        (244, 242, 246),
        (242, 188, 214),
        (224, 142, 188),
        (200, 118, 176),
        (62, 42, 120),
        (104, 70, 156),
        (92, 62, 140),
    ],
    dtype=np.float32,
)

_SUBTYPES = ("luminal A", "luminal B", "HER2-enriched", "triple-negative")


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


# --------------------------------------------------------------------------------------------------
# pixels


def _expression(rng: np.random.Generator, types: np.ndarray, markers: Sequence[Marker]) -> np.ndarray:
    """Per-cell mean counts, shape (N + 1, C); row 0 is the background label.

    A cell of type t expresses marker m with probability frac[t, m]; its level is the type's mean times
    a gamma(4, 1/4) factor (coefficient of variation 0.5), times a per-tissue batch factor.
    """
    n_types = len(CELL_TYPES)
    mean = np.zeros((n_types, len(markers)))
    frac = np.zeros((n_types, len(markers)))
    for j, marker in enumerate(markers):
        for type_name, level, fraction in marker.expression:
            mean[_TYPE_INDEX[type_name], j] = level
            frac[_TYPE_INDEX[type_name], j] = fraction
    shape = (types.size, len(markers))
    expressing = rng.random(shape) < frac[types]
    level = mean[types] * rng.gamma(4.0, 0.25, shape) * expressing
    batch = rng.uniform(0.75, 1.35, len(markers))
    out = np.zeros((types.size + 1, len(markers)), dtype=np.float32)
    out[1:] = level * batch
    return out


def _poisson_thresholds(mean: float) -> np.ndarray:
    """16-bit inverse-CDF thresholds of Poisson(mean): a uniform ``u`` in [0, 2**16) draws ``sum(u >= t_k)``.

    ``t_k = round(65536 * P(X <= k))``, listed while ``P(X > k)`` is at least 2**-16, so the draws follow
    Poisson(mean) up to the 2**-16 resolution of ``u``.
    """
    out, k, p, total = [], 0, math.exp(-mean), 0.0
    while True:
        total += p
        threshold = round(65536 * total)
        if threshold >= 65536 or k > 200:
            return np.array(out, dtype=np.uint16)
        out.append(threshold)
        k += 1
        p *= mean / k


def _render_channel(
    rng: np.random.Generator,
    n_pixels: int,
    cell_pixels: np.ndarray,
    cell_keys: np.ndarray,
    table: np.ndarray,
    background: float,
    dtype: np.dtype,
) -> np.ndarray:
    """One channel, flat: background counts everywhere, cell signal with shot noise where a cell expresses.

    Every pixel gets a Poisson(background) draw (inverse transform of one 16-bit uniform). Pixels of
    cells that express the marker instead get ``lambda + sqrt(lambda) * z`` with ``lambda = background
    + level * zone profile``: the normal approximation of Poisson(lambda) (exact Poisson draws cost
    five times as much), rounded and clipped at 0 for integer dtypes.
    """
    uniform = rng.integers(0, 65536, n_pixels, dtype=np.uint16)
    counts = np.zeros(n_pixels, dtype=np.uint8)
    for threshold in _poisson_thresholds(background):
        counts += uniform >= threshold
    out = counts.astype(dtype)
    signal = table[cell_keys]
    expressing = np.flatnonzero(signal > 0)
    lam = np.float32(background) + signal[expressing]
    noisy = lam + np.sqrt(lam) * rng.standard_normal(expressing.size, dtype=np.float32)
    if dtype.kind in "ui":
        noisy = np.clip(np.rint(noisy), 0, np.iinfo(dtype).max)
    else:
        noisy = np.maximum(noisy, 0)
    out[cell_pixels[expressing]] = noisy.astype(dtype)
    return out


def _render_multiplex(
    rng: np.random.Generator,
    labels: np.ndarray,
    zones: np.ndarray,
    expression: np.ndarray,
    markers: Sequence[Marker],
    dtype: np.dtype,
) -> np.ndarray:
    height, width = labels.shape
    flat_labels = labels.ravel()
    cell_pixels = np.flatnonzero(flat_labels)
    # One gather key per cell pixel: (label, zone) -> row of the per-channel (N + 1) x 4 table.
    cell_keys = flat_labels[cell_pixels].astype(np.intp) * 4 + zones.ravel()[cell_pixels]
    image = np.empty((len(markers), height * width), dtype=dtype)
    for j, marker in enumerate(markers):
        profile = np.asarray(_PROFILES[marker.localisation], dtype=np.float32)
        table = (expression[:, j, None] * profile[None, :]).ravel()
        image[j] = _render_channel(rng, height * width, cell_pixels, cell_keys, table, marker.background, dtype)
    return image.reshape(len(markers), height, width)


def _render_he(
    rng: np.random.Generator, tissue: np.ndarray, labels: np.ndarray, zones: np.ndarray, types: np.ndarray
) -> np.ndarray:
    """RGB uint8 (3, Y, X) H&E of the same cells: eosin-pink matrix and cytoplasm, hematoxylin nuclei."""
    from scipy.ndimage import uniform_filter

    cell_type = np.concatenate([[-1], types])[labels]
    tumor = cell_type == _TYPE_INDEX["tumor cell"]
    lymphocyte = np.isin(cell_type, [_TYPE_INDEX["T cell"], _TYPE_INDEX["B cell"]])
    cls = np.where(tissue, 1, 0).astype(np.uint8)
    cytoplasm = zones >= _ZONE_CYTOPLASM
    cls[cytoplasm] = np.where(tumor[cytoplasm], 3, 2)
    nucleus = zones == _ZONE_NUCLEUS
    cls[nucleus] = np.where(lymphocyte[nucleus], 4, np.where(tumor[nucleus], 5, 6))
    palette = _HE_PALETTE + rng.normal(0, 6, size=(1, 3)).astype(np.float32)  # stain variation per slide
    palette[0] = _HE_PALETTE[0]
    rgb = palette[cls]
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(7.0)
    rgb = uniform_filter(rgb, size=(3, 3, 1), mode="nearest")  # optical blur
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(2, 0, 1).copy()


def _downsample(array: np.ndarray, factor: float) -> np.ndarray:
    """Area-average a ``(..., Y, X)`` array by ``factor`` >= 1 (output side ``ceil(side / factor)``).

    Output pixel i averages the input pixels ``floor(i * f) .. floor((i + 1) * f) - 1``, so integer
    factors are plain block means and edge blocks average what is there. Integer dtypes are rounded,
    booleans become ``mean >= 0.5``.
    """
    if factor == 1.0:
        return array
    if array.ndim > 2:  # one plane at a time: the float64 copy stays the size of one channel
        return np.stack([_downsample(plane, factor) for plane in array])
    out = array.astype(np.float64)
    for axis in (-2, -1):
        size = array.shape[axis]
        starts = np.floor(np.arange(math.ceil(size / factor)) * factor).astype(np.intp)
        counts = np.diff(np.append(starts, size)).astype(np.float64)
        shape = [1] * out.ndim
        shape[axis] = counts.size
        out = np.add.reduceat(out, starts, axis=axis) / counts.reshape(shape)
    if array.dtype == bool:
        return out >= 0.5
    if array.dtype.kind in "ui":
        return np.rint(out).astype(array.dtype)
    return out.astype(array.dtype)


def _label_means(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Mean of every channel over each label 1..N (all present): shape (C, N), float64.

    Pixels are grouped by label once (a stable sort), then all channels are summed per group in one
    ``reduceat``. Sums of integer images are exact in float64, so the means equal ``x[mask == l].mean()``.
    """
    flat = labels.ravel()
    cell_pixels = np.flatnonzero(flat)
    order = cell_pixels[np.argsort(flat[cell_pixels], kind="stable")]
    sorted_labels = flat[order]
    n = int(labels.max())
    if n == 0:
        return np.zeros((image.shape[0], 0))
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    values = image.reshape(image.shape[0], -1)[:, order]
    sums = np.add.reduceat(values, starts, axis=1, dtype=np.float64)
    areas = np.diff(np.r_[starts, order.size])
    return sums / areas


# --------------------------------------------------------------------------------------------------
# one tissue


@dataclass(frozen=True)
class _TissueJob:
    """What a worker needs to render and write one tissue (plain values: it pickles cheaply)."""

    root: str
    index: int
    seed: int
    tissue_id: str
    shape: tuple[int, int]
    n_cells: int
    multiplex: str | None
    panel: tuple[int, ...]  # MARKERS indices of the cohort panel, in panel order
    measured: tuple[bool, ...]  # per panel channel: does this tissue's image contain it
    failed: int | None  # panel position of the qc-failed channel
    has_he: bool
    resolutions: tuple[float, ...]  # finest first
    n_levels: int
    dtype: str


def _write_image(path: Path, image: np.ndarray, mpp: float, names: Sequence[str], n_levels: int) -> None:
    # Levels are computed here with numpy (dask's synchronous scheduler), so that write_image gets
    # in-memory arrays: no nested dask graph when this runs inside a dask.distributed task.
    if n_levels == 1:
        levels = [image]
    else:
        levels = [np.asarray(level.compute(scheduler="synchronous")) for level in build_pyramid(image, n_levels)]
    write_image(path, levels, mpp=mpp, channel_names=list(names))


def _render_tissue(job: _TissueJob) -> pd.DataFrame:
    """Render, write the images and masks of one tissue; return its rows of the cells table."""
    paths = CohortPaths(job.root)
    streams = np.random.SeedSequence([job.seed, 1, job.index]).spawn(4)
    geometry, expression_rng, noise, he_rng = (np.random.default_rng(s) for s in streams)
    height, width = job.shape

    tissue = _tissue_mask(geometry, height, width)
    y, x, spacing = _place_cells(geometry, tissue, job.n_cells)
    types = _cell_types(geometry, y, x, height, width)
    labels, zones, cells = _rasterize(_cell_shapes(geometry, y, x, types, spacing), height, width)
    tissue |= labels > 0
    n = int(cells.y.size)
    finest = job.resolutions[0]

    rows = pd.DataFrame(
        {
            "tissue_id": job.tissue_id,
            "cell_id": np.arange(1, n + 1, dtype=np.int64),
            "cell_type": pd.Categorical.from_codes(cells.types, categories=[t.name for t in CELL_TYPES]),
            "cell_category": pd.Categorical(
                [CELL_TYPES[t].category for t in cells.types], categories=sorted({t.category for t in CELL_TYPES})
            ),
        }
    )
    write_mask(paths.instance_mask(finest, job.tissue_id), labels)
    semantic = np.concatenate([[0], cells.types + 1]).astype(np.uint8)[labels]  # label-encoder values
    write_mask(paths.semantic_mask(finest, CELL_TYPES_TASK, job.tissue_id), semantic)

    if job.multiplex is not None:
        panel = [MARKERS[i] for i in job.panel]
        expression = _expression(expression_rng, cells.types, panel)
        if job.failed is not None:
            expression[:, job.failed] = 0.0  # the antibody did not work: background only
        measured = [j for j, present in enumerate(job.measured) if present]
        markers = [panel[j] for j in measured]
        image = _render_multiplex(noise, labels, zones, expression[:, measured], markers, np.dtype(job.dtype))
        means = np.full((n, len(panel)), np.nan, dtype=np.float32)
        means[:, measured] = _label_means(labels, image).T
        rows = pd.concat([rows, pd.DataFrame(means, columns=[m.name for m in panel])], axis=1)
        for mpp in job.resolutions:
            _write_image(
                paths.image(job.multiplex, mpp, job.tissue_id),
                _downsample(image, mpp / finest),
                mpp,
                [m.name for m in markers],
                job.n_levels,
            )
        del image
    if job.has_he:
        he = _render_he(he_rng, tissue, labels, zones, cells.types)
        for mpp in job.resolutions:
            _write_image(
                paths.image(layout.HE, mpp, job.tissue_id),
                _downsample(he, mpp / finest),
                mpp,
                list(layout.HE_CHANNELS),
                job.n_levels,
            )
    for mpp in job.resolutions:
        write_mask(paths.tissue_mask(mpp, job.tissue_id), _downsample(tissue, mpp / finest))
    return rows


# --------------------------------------------------------------------------------------------------
# the cohort


def _sizes(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer) and not isinstance(image_size, bool):
        return int(image_size), int(image_size)
    try:
        height, width = (int(s) for s in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"image_size must be an int or (height, width), got {image_size!r}") from None
    return height, width


def _check_modalities(modalities: Sequence[str]) -> tuple[str | None, bool]:
    if isinstance(modalities, str):
        modalities = (modalities,)
    modalities = tuple(dict.fromkeys(layout.check_modality(m) for m in modalities))
    multiplex = [m for m in modalities if layout.is_multiplex(m)]
    other = [m for m in modalities if not layout.is_multiplex(m) and m != layout.HE]
    if not modalities or len(multiplex) > 1 or other:
        raise InvalidArgumentError(
            f"modalities must be one multiplex modality ({', '.join(layout.MULTIPLEX_MODALITIES)}) and/or 'he', "
            f"got {modalities!r}"
        )
    return (multiplex[0] if multiplex else None), layout.HE in modalities


def _tile_size_for(shapes: Sequence[tuple[int, int]]) -> int:
    """256, or the largest power of two that fits the smallest image side."""
    smallest = min(min(s) for s in shapes)
    return max(1, min(256, 2 ** int(math.floor(math.log2(max(smallest, 1))))))


def make_synthetic_cohort(
    root: str | Path,
    name: str = DEFAULT_NAME,
    n_tissues: int = 4,
    modalities: Sequence[str] = ("imc", "he"),
    resolutions: Sequence[float] = (1.0,),
    seed: int = 0,
    *,
    image_size: int | tuple[int, int] = 256,
    size_jitter: float = 0.1,
    n_channels: int = 12,
    n_cells: int = 150,
    n_levels: int = 1,
    dtype: str = "uint16",
    he_tissues: Sequence[int] | None = None,
    standardization: bool = True,
    tiling: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a valid, realistic synthetic cohort at ``root/name``; deterministic per ``seed``.

    What it contains:

    - ``n_tissues`` tissues from ``n_tissues - 1`` patients (the first patient has two specimens,
      ``0000`` and ``0001``, from one biopsy), with clinical columns (``original_patient_id``,
      ``biopsy_id``, ``split`` by patient, ``grade``, ``subtype``, ``age``) and ``mpp_<modality>``;
    - a tissue mask per tissue (a blob with holes), cells drawn as ellipses that may touch but never
      share a pixel, each with a nucleus, cytoplasm and membrane rim, and six cell types placed in
      tumour nests, stroma and a lymphoid aggregate;
    - for the multiplex modality, a panel of the first ``n_channels`` of :data:`MARKERS` (real HUGO
      symbols with UniProt accessions, nuclear markers ``DNA1``/``H3C1``); the last panel channel
      fails QC (``qc_pass=False``, background only); the second-to-last is missing from the last
      tissue (and every tenth one), which is ``False`` in ``channels_per_tissue`` and absent from that
      tissue's image; expression depends on the cell type;
    - with ``"he"``, an RGB H&E of the same cells on the same pixel grid for ``he_tissues``
      (``alignment="exact"`` for tissues with both modalities, ``"no alignment"`` for the others,
      missing when the cohort has one modality);
    - masks: tissue masks at every resolution, instance masks and the ``cell_types`` semantic mask with
      its label encoder at the finest resolution;
    - ``cells.parquet``: ``tissue_id, cell_id, cell_type, cell_category`` and the mean intensity of
      every panel channel, measured on the written finest image (NaN where the tissue lacks the channel);
    - unless switched off, both baseline standardization specs at ``uq_0.99`` and a ``default`` tiling
      at every resolution (tile size 256, or the largest power of two that fits the smallest image).

    The cohort is built in a hidden temporary folder next to the target and renamed when complete.

    Parameters
    ----------
    root
        Folder in which the cohort folder is created.
    name
        Dataset key (folder name), e.g. ``"synthetic2025cohort"``.
    n_tissues
        Number of tissues.
    modalities
        One multiplex modality (``imc``, ``codex``, ``cycif``, ``mibi``) and/or ``he``.
    resolutions
        Microns per pixel; images are rendered at the finest and area-averaged to the others.
    seed
        Random seed: the same seed gives the same pixels and tables.
    image_size
        Side (or ``(height, width)``) of the finest images; each tissue varies by ``size_jitter``.
    size_jitter
        Relative variation of the image sides between tissues (0 for exact sizes).
    n_channels
        Multiplex panel size (at least 3, at most ``len(MARKERS)``).
    n_cells
        Cells per tissue, approximately.
    n_levels
        Pyramid levels per image (1 = none).
    dtype
        Multiplex image dtype (unsigned integers or floats); H&E is always ``uint8``.
    he_tissues
        Positions (0-based) of the tissues that get an H&E; default about half of them.
    standardization, tiling
        Compute the standardization statistics and the default tiling.
    overwrite
        Replace an existing cohort (else :class:`~spora_sd.errors.TargetExistsError`).
    progress
        Show progress bars.

    Returns
    -------
    Path
        The cohort folder ``root/name``.

    Examples
    --------
    >>> import tempfile
    >>> from spora_sd.io.cohort import open_cohort
    >>> root = make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=3, image_size=(80, 120), n_cells=15,
    ...                              resolutions=(1.0, 2.0), modalities=("imc",))
    >>> cohort = open_cohort(root)
    >>> cohort.resolutions("imc"), cohort.tissues["alignment"].isna().all()
    ([1.0, 2.0], np.True_)
    """
    name = layout.check_dataset_key(name)
    multiplex, with_he = _check_modalities(modalities)
    if isinstance(n_tissues, bool) or not isinstance(n_tissues, int) or n_tissues < 1:
        raise InvalidArgumentError(f"n_tissues must be a positive integer, got {n_tissues!r}")
    if multiplex is not None and (
        isinstance(n_channels, bool) or not isinstance(n_channels, int) or not 3 <= n_channels <= len(MARKERS)
    ):
        raise InvalidArgumentError(f"n_channels must be between 3 and {len(MARKERS)}, got {n_channels!r}")
    if not isinstance(n_cells, int) or n_cells < 0:
        raise InvalidArgumentError(f"n_cells must be a non-negative integer, got {n_cells!r}")
    if not isinstance(n_levels, int) or n_levels < 1:
        raise InvalidArgumentError(f"n_levels must be a positive integer, got {n_levels!r}")
    try:
        image_dtype = np.dtype(dtype)
    except TypeError:
        raise InvalidArgumentError(f"dtype must be an unsigned integer or float dtype, got {dtype!r}") from None
    if image_dtype.kind not in "uf":
        raise InvalidArgumentError(f"dtype must be an unsigned integer or float dtype, got {dtype!r}")
    if not resolutions:
        raise InvalidArgumentError("resolutions must name at least one resolution (microns per pixel)")
    try:
        mpps = tuple(sorted({float(r) for r in resolutions}))
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"resolutions must be numbers (microns per pixel), got {resolutions!r}") from None
    for mpp in mpps:
        layout.format_resolution(mpp)  # refuses what has no folder name
    base_height, base_width = _sizes(image_size)
    if min(base_height, base_width) < 8:
        raise InvalidArgumentError(f"image_size must be at least 8 pixels, got {image_size!r}")

    target = Path(root) / name
    if target.exists() and not overwrite:
        raise TargetExistsError(f"{target} exists; pass overwrite=True to replace it")

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    jitter = rng.uniform(-size_jitter, size_jitter, size=(n_tissues, 2))
    shapes = [(max(8, round(base_height * (1 + jy))), max(8, round(base_width * (1 + jx)))) for jy, jx in jitter]
    cell_counts = [max(0, round(n_cells * f)) for f in rng.uniform(0.85, 1.15, n_tissues)]
    if not with_he:
        he_set: set[int] = set()
    elif multiplex is None:
        he_set = set(range(n_tissues))
    elif he_tissues is None:
        he_set = {int(i) for i in rng.permutation(n_tissues)[: math.ceil(n_tissues / 2)]}
    else:
        he_set = {int(i) for i in he_tissues}
        if not he_set <= set(range(n_tissues)):
            raise InvalidArgumentError(f"he_tissues must be positions in range({n_tissues}), got {sorted(he_set)}")

    patients = _patients(rng, name, n_tissues)
    tissue_ids = patients.tissue_ids

    panel = tuple(range(n_channels)) if multiplex is not None else ()
    ragged = n_channels - 2 if multiplex is not None and n_tissues > 1 else None
    lacking = {n_tissues - 1} | {i for i in range(n_tissues) if i % 10 == 9} if ragged is not None else set()
    failed = n_channels - 1 if multiplex is not None else None

    # Build under a hidden sibling folder; the cohort inside it already has its final name, so the
    # tables' tissue ids and the readers agree, and one rename publishes it.
    workspace = Path(root) / f".{name}{TMP_MARKER}{uuid.uuid4().hex[:12]}"
    cohort_dir = workspace / name
    try:
        cohort_dir.mkdir(parents=True)
        jobs = [
            _TissueJob(
                root=str(cohort_dir),
                index=i,
                seed=int(seed),
                tissue_id=tissue_ids[i],
                shape=shapes[i],
                n_cells=cell_counts[i],
                multiplex=multiplex,
                panel=panel,
                measured=tuple(not (i in lacking and j == ragged) for j in range(len(panel))),
                failed=failed,
                has_he=i in he_set,
                resolutions=mpps,
                n_levels=n_levels,
                dtype=image_dtype.str,
            )
            for i in range(n_tissues)
        ]
        cell_tables = map_tissues(_render_tissue, jobs, progress=progress, description="synthetic tissues")
        tissues = _tissues_table(patients, [multiplex] if multiplex else [], with_he, he_set, mpps[0])
        _write_tables(CohortPaths(cohort_dir), name, jobs, cell_tables, tissues)
        if multiplex is not None and standardization:
            from spora_sd.stats.standardization import compute_standardizations

            for mpp in mpps:
                compute_standardizations(cohort_dir, multiplex, resolution=mpp, progress=progress)
        if tiling:
            from spora_sd.stats.tiling import compute_tiling

            for mpp in mpps:
                sizes = [tuple(math.ceil(s / (mpp / mpps[0])) for s in shape) for shape in shapes]
                compute_tiling(cohort_dir, tile_size=_tile_size_for(sizes), resolution=mpp, progress=progress)
        replace_path(cohort_dir, target, overwrite=overwrite)
    finally:
        remove_path(workspace)
    logger.info("wrote synthetic cohort %s (%d tissues)", target, n_tissues)
    return target


@dataclass(frozen=True)
class _Patients:
    """Who the tissues come from, and the clinical columns (one entry per patient)."""

    tissue_ids: list[str]
    patient_of: list[int]  # per tissue
    specimen_of: list[int]  # per tissue
    raw_ids: list[str]
    split: np.ndarray
    grade: np.ndarray
    subtype: np.ndarray
    age: np.ndarray


def _patients(rng: np.random.Generator, name: str, n_tissues: int) -> _Patients:
    """Tissues 0 and 1 are two specimens of the first patient; every other tissue has its own patient."""
    patient_of = [max(0, i - 1) for i in range(n_tissues)]
    n_patients = patient_of[-1] + 1
    raw_ids = [f"SYN-P{p:04d}" for p in range(n_patients)]
    hashes = [layout.patient_hash(raw, name) for raw in raw_ids]
    if len(set(hashes)) != len(hashes):
        raise InvalidArgumentError("two synthetic patients hash to the same patient id; use another dataset name")
    specimen_of = [0 if i == 0 or patient_of[i] != patient_of[i - 1] else 1 for i in range(n_tissues)]
    tissue_ids = [layout.compose_tissue_id(name, hashes[p], s) for p, s in zip(patient_of, specimen_of, strict=True)]
    test = rng.permutation(n_patients)[: max(1, round(0.25 * n_patients)) if n_patients > 1 else 0]
    return _Patients(
        tissue_ids=tissue_ids,
        patient_of=patient_of,
        specimen_of=specimen_of,
        raw_ids=raw_ids,
        split=np.where(np.isin(np.arange(n_patients), test), "test", "train"),
        grade=rng.integers(1, 4, n_patients),
        subtype=rng.choice(np.array(_SUBTYPES, dtype=object), n_patients),
        age=rng.integers(35, 86, n_patients),
    )


def _tissues_table(
    patients: _Patients, multiplex: list[str], with_he: bool, he_set: set[int], finest: float
) -> pd.DataFrame:
    """One row per (tissue, modality); ``alignment`` is missing when the cohort has one modality."""
    modalities = multiplex + ([layout.HE] if with_he else [])
    rows = []
    for i, tissue_id in enumerate(patients.tissue_ids):
        has = {m: (m != layout.HE or i in he_set) for m in modalities}
        present = [m for m in modalities if has[m]]
        p = patients.patient_of[i]
        for modality in present:
            rows.append(
                {
                    "tissue_id": tissue_id,
                    "patient_id": layout.parse_tissue_id(tissue_id).patient_id,
                    "specimen_id": f"{patients.specimen_of[i]:04d}",
                    "modality": modality,
                    "alignment": None if len(modalities) == 1 else ("exact" if len(present) > 1 else "no alignment"),
                    "biopsy_id": f"SYN-B{p:04d}",
                    **{f"mpp_{m}": (finest if has[m] else np.nan) for m in modalities},
                    "split": str(patients.split[p]),
                    "original_patient_id": patients.raw_ids[p],
                    "grade": int(patients.grade[p]),
                    "subtype": str(patients.subtype[p]),
                    "age": int(patients.age[p]),
                }
            )
    return pd.DataFrame(rows)


def _write_tables(
    paths: CohortPaths, name: str, jobs: list[_TissueJob], cell_tables: list[pd.DataFrame], tissues: pd.DataFrame
) -> None:
    """The cohort's tables: tissues, label encoder, cells and, for a multiplex modality, its channel tables."""
    write_table(tissues, paths.tissues, "tissues", index=False, dataset=name)
    finest = jobs[0].resolutions[0]
    label_encoder = pd.DataFrame(
        {"name": [t.name for t in CELL_TYPES], "id": np.arange(1, len(CELL_TYPES) + 1, dtype=np.int64)}
    )
    write_table(label_encoder, paths.label_encoder(finest, CELL_TYPES_TASK), "label_encoder", index=False)

    tissue_ids = [job.tissue_id for job in jobs]
    panel = [MARKERS[i] for i in jobs[0].panel]
    names = [m.name for m in panel]
    cells = pd.concat(cell_tables, ignore_index=True)
    cells["tissue_id"] = pd.Categorical(cells["tissue_id"], categories=tissue_ids)
    write_table(cells, paths.cells, "cells", index=False, channels=names or None, dataset=name)
    multiplex = jobs[0].multiplex
    if multiplex is None:
        return
    channels = pd.DataFrame(
        {
            "channel_name": names,
            "qc_pass": [j != jobs[0].failed for j in range(len(panel))],
            "uniprot_id": [m.uniprot_id for m in panel],
            "is_nuclear_marker": [m.is_nuclear_marker for m in panel],
        }
    )
    write_table(channels, paths.channels(multiplex), "channels", index=False)
    per_tissue = pd.DataFrame(
        [job.measured for job in jobs], index=pd.Index(tissue_ids, name="tissue_id"), columns=names
    )
    write_table(per_tissue, paths.channels_per_tissue(multiplex), "channels_per_tissue", channels=names, dataset=name)
