"""Standardization statistics equal a direct numpy computation over the tissue pixels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spora_sd
from spora_sd.datasets.synthetic import make_synthetic_cohort
from spora_sd.io.cohort import open_cohort
from spora_sd.io.images import write_image
from spora_sd.stats.standardization import (
    compute_standardization,
    compute_standardizations,
    quantile_from_counts,
    standardization_param,
    standardize,
)

METHODS = ("quantile_clipping", "quantile_clipping_log1p")


@pytest.fixture(scope="module")
def uint_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("std")
    return make_synthetic_cohort(
        root,
        name="std2025uint",
        n_tissues=3,
        image_size=64,
        n_cells=20,
        n_channels=5,
        standardization=False,
        tiling=False,
        seed=11,
    )


@pytest.fixture(scope="module")
def float_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stdf")
    return make_synthetic_cohort(
        root,
        name="std2025float",
        n_tissues=3,
        image_size=56,
        n_cells=15,
        n_channels=4,
        dtype="float32",
        modalities=("imc",),
        standardization=False,
        tiling=False,
        seed=12,
    )


def _tissue_pixels(cohort_path: Path, use_mask: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """channel -> tissue -> raw tissue pixels, straight from the images and masks."""
    cohort = open_cohort(cohort_path)
    out: dict[str, dict[str, np.ndarray]] = {c: {} for c in cohort.panel("imc")}
    for tid in cohort.tissue_ids("imc"):
        image = cohort.image(tid, "imc").compute()
        mask = cohort.tissue_mask(tid).astype(bool) if use_mask else np.ones(image.shape[1:], bool)
        for k, channel in enumerate(cohort.tissue_channels(tid, "imc")):
            out[channel][tid] = image[k][mask]
    return out


def _check_against_numpy(cohort_path: Path, method: str, lower_q: float | None, use_mask: bool = True) -> None:
    cohort = open_cohort(cohort_path)
    param = standardization_param(0.99, lower_q)
    stats = cohort.standardization("imc", method, param)
    pixels = _tissue_pixels(cohort_path, use_mask)
    panel = cohort.panel("imc")
    upper = stats["image_level_upper_quantiles"]
    assert list(upper.columns) == panel and upper.index.name == "tissue_id"
    assert upper.index.tolist() == cohort.tissue_ids("imc")
    for channel in panel:
        pooled = []
        for tid in cohort.tissue_ids("imc"):
            if tid not in pixels[channel]:
                for name in ("image_level_upper_quantiles", "image_level_means", "image_level_stds"):
                    assert np.isnan(stats[name].loc[tid, channel])
                continue
            x = pixels[channel][tid]
            # exact: the same number numpy gives, bit for bit
            assert upper.loc[tid, channel] == np.quantile(x, 0.99)
            lo = 0.0
            if lower_q is not None:
                lo = np.quantile(x, lower_q)
                assert stats["image_level_lower_quantiles"].loc[tid, channel] == lo
            hi = np.quantile(x, 0.99)
            if hi <= lo:
                assert np.isnan(stats["image_level_means"].loc[tid, channel])
                continue
            y = standardize(x, lo, hi, method)
            np.testing.assert_allclose(stats["image_level_means"].loc[tid, channel], y.mean(), rtol=1e-9)
            np.testing.assert_allclose(stats["image_level_stds"].loc[tid, channel], y.std(), rtol=1e-9)
            pooled.append(y)
        y_all = np.concatenate(pooled)
        np.testing.assert_allclose(stats["global_level_means"].loc[0, channel], y_all.mean(), rtol=1e-9)
        np.testing.assert_allclose(stats["global_level_stds"].loc[0, channel], y_all.std(), rtol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_uint_cohort_matches_numpy(uint_cohort: Path, method: str) -> None:
    folder = compute_standardization(uint_cohort, "imc", method)
    assert folder == uint_cohort / "imc" / "1_0mpp" / "standardization" / method / "uq_0.99"
    _check_against_numpy(uint_cohort, method, None)
    stats = open_cohort(uint_cohort).standardization("imc", method, "uq_0.99")
    # exact pooled quantile of the raw tissue pixels (8/16-bit images)
    for channel, per_tissue in _tissue_pixels(uint_cohort).items():
        expected = np.quantile(np.concatenate(list(per_tissue.values())), 0.99)
        assert stats["global_level_upper_quantiles"].loc[0, channel] == expected
    if method == "quantile_clipping":
        means = stats["global_level_means"].to_numpy()
        assert ((means > 0) & (means < 1)).all()  # rescaled into [0, 1]


def test_float_cohort_and_lower_quantile(float_cohort: Path) -> None:
    folders = compute_standardizations(float_cohort, "imc", METHODS, upper_quantile=0.99, lower_quantile=0.05)
    assert [f.name for f in folders] == ["uq_0.99_lq_0.05"] * 2
    for method in METHODS:
        _check_against_numpy(float_cohort, method, 0.05)
        stats = open_cohort(float_cohort).standardization("imc", method, "uq_0.99_lq_0.05")
        assert "image_level_lower_quantiles" in stats
        # float images have no exact streaming summary: no global quantiles
        assert "global_level_upper_quantiles" not in stats


def test_all_pixels_without_tissue_mask(float_cohort: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(float_cohort, tmp_path / float_cohort.name)
    compute_standardization(copy, method="quantile_clipping", use_tissue_mask=False)
    _check_against_numpy(copy, "quantile_clipping", None, use_mask=False)


def test_degenerate_channel_is_left_out(uint_cohort: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(uint_cohort, tmp_path / uint_cohort.name)
    cohort = open_cohort(copy)
    tid = cohort.tissue_ids("imc")[0]
    names = cohort.tissue_channels(tid, "imc")
    image = cohort.image(tid, "imc").compute()
    image[names.index("PTPRC")] = 0  # a channel that is empty on this tissue: upper quantile 0
    write_image(cohort.image_path(tid, "imc"), image, mpp=1.0, channel_names=names)
    compute_standardization(copy, method="quantile_clipping")
    stats = open_cohort(copy).standardization("imc", "quantile_clipping")
    assert stats["image_level_upper_quantiles"].loc[tid, "PTPRC"] == 0
    assert np.isnan(stats["image_level_means"].loc[tid, "PTPRC"])
    _check_against_numpy(copy, "quantile_clipping", None)  # global stats come from the other tissues


def test_written_files_validate_and_read_back(uint_cohort: Path) -> None:
    compute_standardizations(uint_cohort)
    report = spora_sd.validate(uint_cohort)
    assert report.ok, str(report)
    cohort = open_cohort(uint_cohort)
    tables = cohort.standardization("imc", "quantile_clipping_log1p", "uq_0.99_image")  # the reader's spelling
    assert set(tables) == {
        "image_level_upper_quantiles",
        "image_level_means",
        "image_level_stds",
        "global_level_means",
        "global_level_stds",
        "global_level_upper_quantiles",
    }
    assert len(tables["global_level_means"]) == 1


def test_refuses_to_overwrite_and_bad_arguments(uint_cohort: Path) -> None:
    compute_standardization(uint_cohort, method="quantile_clipping")
    with pytest.raises(FileExistsError, match="overwrite"):
        compute_standardization(uint_cohort, method="quantile_clipping", overwrite=False)
    with pytest.raises(ValueError, match="multiplex"):
        compute_standardization(uint_cohort, modality="he")
    with pytest.raises(ValueError, match="unknown standardization method"):
        compute_standardization(uint_cohort, method="zscore")
    with pytest.raises(ValueError, match="upper_quantile"):
        compute_standardization(uint_cohort, upper_quantile=1.5)
    with pytest.raises(ValueError, match="smaller"):
        compute_standardization(uint_cohort, upper_quantile=0.5, lower_quantile=0.9)
    with pytest.raises(spora_sd.CohortNotFoundError, match="tissue mask"):
        copy_mask = open_cohort(uint_cohort).paths.tissue_mask(1.0, open_cohort(uint_cohort).tissue_ids()[0])
        moved = copy_mask.with_suffix(".bak")
        copy_mask.rename(moved)
        try:
            compute_standardization(uint_cohort)
        finally:
            moved.rename(copy_mask)


def test_dask_client_gives_the_same_tables(uint_cohort: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    loop_folder = compute_standardization(uint_cohort, method="quantile_clipping_log1p")
    loop = {p.name: pd.read_parquet(p) for p in loop_folder.glob("*.parquet")}
    copy = shutil.copytree(uint_cohort, tmp_path / uint_cohort.name)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as tasks:
            dask_folder = compute_standardization(copy, method="quantile_clipping_log1p")
    assert sum(t["key"].startswith("_tissue_stats") for t in tasks.data) == 3  # one task per tissue
    dask = {p.name: pd.read_parquet(p) for p in dask_folder.glob("*.parquet")}
    assert loop.keys() == dask.keys()
    for name, table in loop.items():
        # the same per-tissue numbers; the global ones may differ in the last bits (merge order)
        pd.testing.assert_frame_equal(table, dask[name], check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_quantile_from_counts_is_numpy_bit_for_bit(dtype: str) -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 10, 101, 1000):
        x = (rng.poisson(3, size) * (rng.random(size) < 0.7)).astype(dtype)
        counts = np.bincount(x)
        for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0, rng.random()):
            assert quantile_from_counts(counts, q) == np.quantile(x, q), (size, q)
    assert np.isnan(quantile_from_counts(np.zeros(3, np.int64), 0.5))


def test_standardize_formulas() -> None:
    x = np.array([-1.0, 0.0, 2.0, 4.0, 9.0])
    np.testing.assert_allclose(standardize(x, 0.0, 4.0, "quantile_clipping"), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(standardize(x, 1.0, 4.0, "quantile_clipping"), [0, 0, 1 / 3, 1, 1])
    np.testing.assert_allclose(standardize(x, 0.0, 4.0, "quantile_clipping_log1p"), np.log1p([0, 0, 2, 4, 4]))
    with pytest.raises(ValueError, match="unknown"):
        standardize(x, 0, 1, "nope")
