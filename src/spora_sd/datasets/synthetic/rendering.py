"""Pixels of a synthetic tissue: per-cell expression, multiplex channels with shot noise, a registered
H&E, downsampling to coarser resolutions and mean intensities per label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from spora_sd.datasets.synthetic.biology import (
    _HE_PALETTE,
    _PROFILES,
    _TYPE_INDEX,
    _ZONE_CYTOPLASM,
    _ZONE_NUCLEUS,
    CELL_TYPES,
    Marker,
)

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
