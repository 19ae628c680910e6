"""Per-marker strips across tissues: quantiles inside the mask, the log-scale picture, low-signal flags."""

from __future__ import annotations

import numpy as np

from spora_sd.qc.distributions import QUANTILES, low_signal, strip, tissue_quantiles


def test_quantiles_only_count_tissue_pixels() -> None:
    pixels = np.zeros((2, 10, 10), np.float32)
    pixels[:, :5] = 100.0  # tissue half
    inside = np.zeros((10, 10), bool)
    inside[:5] = True
    assert np.all(tissue_quantiles(pixels, inside) == 100.0)
    assert tissue_quantiles(pixels, None)[0, 0] == 0.0  # without a mask: every pixel
    assert tissue_quantiles(pixels, inside).shape == (2, len(QUANTILES))


def test_low_signal_flags_a_failed_stain_only() -> None:
    q = np.array([[1, 2, 3, 4, 50], [1, 2, 3, 4, 60], [1, 2, 3, 4, 55], [0, 0, 0, 1, 2], [np.nan] * 5])
    assert low_signal(q) == [3]  # the missing tissue (NaN) is not flagged
    assert low_signal(q[:2]) == []  # two tissues say nothing about what is normal


def test_strip_draws_each_tissue_and_tints_missing_ones() -> None:
    q = np.array([[1, 5, 10, 20, 40], [np.nan] * 5, [0, 0, 0, 0, 0]])
    picture = strip(q, width=30, height=50)
    assert picture.shape == (50, 30, 3)
    first, missing, empty = picture[:, :10], picture[:, 10:20], picture[:, 20:]
    assert (first == (70, 130, 180)).all(axis=2).any() and (first == 0).all(axis=2).any()  # box and median
    assert (missing == (250, 215, 215)).all()
    assert (empty[-1] == 0).all() and (empty[:-1] == 255).all()  # all zero: the median sits on the floor
