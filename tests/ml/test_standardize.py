"""Standardization of tiles, checked against a direct numpy implementation of spec §6's formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spora_sd.ml.standardize import Standardizer, parse_standardization, standardize_channels
from spora_sd.stats.standardization import standardize

PANEL = ["A", "B", "C", "D", "E", "F"]


def reference(x, lower, upper, method, mean=None, std=None):
    """The formulas, written out in float64 one channel at a time."""
    out = np.empty(x.shape, dtype=np.float64)
    for c in range(x.shape[0]):
        clipped = np.minimum(np.maximum(x[c].astype(np.float64), lower[c]), upper[c])
        y = (clipped - lower[c]) / (upper[c] - lower[c]) if method == "quantile_clipping" else np.log(1.0 + clipped)
        out[c] = y if mean is None else (y - mean[c]) / std[c]
    return out


@pytest.fixture
def tile() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 400, size=(3, 16, 16)).astype("uint16")


@pytest.mark.parametrize("method", ["quantile_clipping", "quantile_clipping_log1p"])
@pytest.mark.parametrize("zscore", [False, True])
@pytest.mark.parametrize("with_lower", [False, True])
def test_standardize_channels_matches_the_formulas(tile, method: str, zscore: bool, with_lower: bool) -> None:
    lower = np.array([5.0, 20.0, 0.5]) if with_lower else np.zeros(3)
    upper = np.array([300.0, 150.0, 390.0])
    mean, std = (np.array([0.4, 2.0, -1.0]), np.array([0.2, 0.7, 3.0])) if zscore else (None, None)
    out = standardize_channels(tile, lower, upper, method, mean, std)
    assert out.dtype == np.float32 and out.shape == tile.shape
    np.testing.assert_allclose(out, reference(tile, lower, upper, method, mean, std), rtol=1e-5, atol=1e-5)
    # ... and the same numbers as the function that compute_standardization computes its statistics with.
    for c in range(3):
        y = standardize(tile[c], lower[c], upper[c], method)
        expected = y if mean is None else (y - mean[c]) / std[c]
        np.testing.assert_allclose(out[c], expected, rtol=1e-5, atol=1e-5)


def make_standardizer(method: str = "quantile_clipping", *, lower: bool = False, zscore: bool = True) -> Standardizer:
    upper = pd.DataFrame(
        [[100.0, 0.0, np.nan, np.inf, 50.0, 80.0], [90.0, 10.0, 10.0, 10.0, 10.0, 10.0]],
        index=pd.Index(["t1", "t2"], name="tissue_id"),
        columns=PANEL,
    )
    lows = pd.DataFrame([[1.0, 0.0, 0.0, 0.0, np.nan, 80.0], [0.0] * 6], index=upper.index, columns=PANEL)
    means = pd.DataFrame([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]], columns=PANEL)
    stds = pd.DataFrame([[0.25, 0.25, 0.25, 0.25, 0.25, 0.0]], columns=PANEL)
    return Standardizer(
        PANEL,
        method,
        upper,
        lower=lows if lower else None,
        mean=means if zscore else None,
        std=stds if zscore else None,
    )


def test_channels_with_zero_nan_or_infinite_statistics_are_dropped() -> None:
    # t1: B upper 0, C upper NaN, D upper inf; F std 0 (z-score only)
    assert make_standardizer(zscore=True).valid("t1").tolist() == [True, False, False, False, True, False]
    assert make_standardizer(zscore=False).valid("t1").tolist() == [True, False, False, False, True, True]
    # with lower quantiles: E lower NaN, F lower == upper (a zero range)
    assert make_standardizer(lower=True, zscore=False).valid("t1").tolist() == [True, False, False, False, False, False]
    assert make_standardizer(zscore=True).valid("t2").tolist() == [True, True, True, True, True, False]


@pytest.mark.parametrize("method", ["quantile_clipping", "quantile_clipping_log1p"])
@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32"])  # lookup tables for 8/16-bit, else arithmetic
def test_standardizer_applies_the_tissue_statistics_by_panel_position(tile, method: str, dtype: str) -> None:
    s = make_standardizer(method, lower=True, zscore=True)
    x = (tile[:2] % 256).astype(dtype)
    if dtype == "float32":
        x += 0.25  # non-integer values
    out = s.apply(x, "t2", np.array([0, 4]))  # panel channels A and E of tissue t2
    expected = reference(x, np.array([0.0, 0.0]), np.array([90.0, 10.0]), method, np.full(2, 0.5), np.full(2, 0.25))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    stats = s.statistics("t2")
    assert stats.loc["E", "upper"] == 10.0 and not stats.loc["F", "valid"]


def test_lookup_tables_handle_fractional_bounds_and_values_past_the_table() -> None:
    upper = pd.DataFrame([[7.5]], index=pd.Index(["t"], name="tissue_id"), columns=["A"])
    lower = pd.DataFrame([[2.5]], index=upper.index, columns=["A"])
    s = Standardizer(["A"], "quantile_clipping", upper, lower=lower)
    x = np.array([[[0, 2, 3, 7, 8, 65535]]], dtype="uint16")
    np.testing.assert_allclose(s.apply(x, "t", np.array([0]))[0, 0], [0.0, 0.0, 0.1, 0.9, 1.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="unusable statistics"):
        Standardizer(["A"], "quantile_clipping", upper * 0).apply(x, "t", np.array([0]))


def test_unknown_tissue_and_bad_arguments_raise() -> None:
    s = make_standardizer()
    with pytest.raises(ValueError, match="no statistics for tissue 'nope'"):
        s.valid("nope")
    with pytest.raises(ValueError, match="both"):
        Standardizer(PANEL, "quantile_clipping", pd.DataFrame(), mean=pd.DataFrame())
    with pytest.raises(ValueError, match="unknown standardization method"):
        Standardizer(PANEL, "zscore", pd.DataFrame())


def test_parse_standardization() -> None:
    assert parse_standardization("quantile_clipping_log1p/uq_0.99") == ("quantile_clipping_log1p", "uq_0.99")
    assert parse_standardization("/quantile_clipping/uq_0.99_image/") == ("quantile_clipping", "uq_0.99_image")
    for bad in ("quantile_clipping", "minmax/uq_0.99", "quantile_clipping/uq/extra"):
        with pytest.raises(ValueError, match="expected '<method>/<param>'"):
            parse_standardization(bad)


def test_standardizer_pickles_without_its_per_tissue_cache() -> None:
    import pickle

    s = make_standardizer()
    s.valid("t1")
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._per_tissue == {} and s2.valid("t1").tolist() == s.valid("t1").tolist()
