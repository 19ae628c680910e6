"""Tiles of the real steinbock IMC test data (tests/data/imc_testdata_steinbock), made a spora cohort.

The cohort is built with ``spatialdata_io.steinbock`` and :func:`spora_sd.from_spatialdata`; tiles are
checked against the source OME-TIFF images and DeepCell masks, and against the stored statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import spora_sd
from spora_sd.ml import TileDataset, collate

DATA = Path(__file__).parents[1] / "data" / "imc_testdata_steinbock"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> spora_sd.Cohort:
    import spatialdata_io

    sdata = spatialdata_io.steinbock(DATA, labels_kind="deepcell")
    root = tmp_path_factory.mktemp("steinbock") / "steinbock2021mock"
    return spora_sd.open_cohort(spora_sd.from_spatialdata(sdata, root, mpp=1.0, tiling=False))


def padded(array: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    window = array[..., row : row + size, col : col + size]
    out = np.zeros((*array.shape[:-2], size, size), dtype=array.dtype)
    out[..., : window.shape[-2], : window.shape[-1]] = window
    return out


def test_steinbock_tiles_equal_the_source_images_and_masks(cohort: spora_sd.Cohort) -> None:
    panel = pd.read_csv(DATA / "panel.csv")
    names = dict(zip(cohort.tissues["tissue_id"], cohort.tissues["source_name"], strict=True))
    ds = TileDataset(cohort, tile_size=32, strategy="grid", standardization=None, masks=("cells",), numpy=True)
    assert ds.panel == panel.loc[panel["keep"] == 1, "name"].tolist()
    assert set(ds.tissue_ids) == set(names) and len(ds.tissue_ids) == 15
    for i in range(0, len(ds), 3):
        item = ds[i]
        source = names[item["tissue_id"]]
        image = tifffile.imread(DATA / "ome" / f"{source}.ome.tiff")
        mask = tifffile.imread(DATA / "masks_deepcell" / f"{source}.tiff")
        assert item["image"].shape == (5, 32, 32) and item["channel_names"] == ds.panel
        np.testing.assert_array_equal(item["image"], padded(image, item["row"], item["col"], 32).astype(np.float32))
        np.testing.assert_array_equal(item["masks"]["cells"], padded(mask, item["row"], item["col"], 32))


@pytest.mark.parametrize("method", ["quantile_clipping", "quantile_clipping_log1p"])
def test_steinbock_standardization_matches_numpy(cohort: spora_sd.Cohort, method: str) -> None:
    folder = cohort.path / "imc" / "1_0mpp" / "standardization" / method / "uq_0.99"
    upper = pd.read_parquet(folder / "image_level_upper_quantiles.parquet")
    means = pd.read_parquet(folder / "global_level_means.parquet").iloc[0]
    stds = pd.read_parquet(folder / "global_level_stds.parquet").iloc[0]
    names = dict(zip(cohort.tissues["tissue_id"], cohort.tissues["source_name"], strict=True))
    ds = TileDataset(cohort, tile_size=32, strategy="grid", standardization=f"{method}/uq_0.99", numpy=True)
    checked = 0
    for i in range(0, len(ds), 4):
        item = ds[i]
        tid = item["tissue_id"]
        image = tifffile.imread(DATA / "ome" / f"{names[tid]}.ome.tiff")
        raw = padded(image, item["row"], item["col"], 32)
        # Grid tiles reaching past the image are 0 there, after standardization too.
        inside = padded(np.ones(image.shape[1:], bool), item["row"], item["col"], 32)
        for k, name in enumerate(item["channel_names"]):
            u = upper.loc[tid, name]
            x = np.clip(raw[ds.panel.index(name)].astype(np.float64), 0.0, u)
            y = x / u if method == "quantile_clipping" else np.log1p(x)
            y = np.where(inside, (y - means[name]) / stds[name], 0.0)
            np.testing.assert_allclose(item["image"][k], y, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked > 0
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 5, 32, 32)
