"""TileDataset over a synthetic cohort: shapes, channels, standardization, masks, selection, tilings.

These tests run with or without torch (``numpy=True``); tests/ml/test_torch.py covers the tensors.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import spora_sd
from spora_sd.errors import CohortNotFoundError, InvalidArgumentError
from spora_sd.io.masks import read_mask
from spora_sd.ml import TileDataset, collate
from spora_sd.ml.tiles import cell_centres


@pytest.fixture(scope="module")
def cohort(small_cohort: Path) -> spora_sd.Cohort:
    return spora_sd.open_cohort(small_cohort)


@pytest.fixture(scope="module")
def cohort_copy(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy this module may add tables to."""
    target = tmp_path_factory.mktemp("ml_tiles") / small_cohort.name
    shutil.copytree(small_cohort, target)
    return target


def raw_tile(cohort: spora_sd.Cohort, tissue_id: str, row: int, col: int, size: int) -> np.ndarray:
    """The tile read straight from the image with zarr, zero-padded, as float64."""
    image = zarr.open_array(cohort.image_path(tissue_id, "imc", 1.0) / "0", mode="r")[...]
    out = np.zeros((image.shape[0], size, size))
    window = image[:, max(row, 0) : row + size, max(col, 0) : col + size]
    out[:, max(-row, 0) : max(-row, 0) + window.shape[1], max(-col, 0) : max(-col, 0) + window.shape[2]] = window
    return out


def spec_folder(cohort: spora_sd.Cohort, method: str, param: str = "uq_0.99") -> Path:
    return cohort.path / "imc" / "1_0mpp" / "standardization" / method / param


def test_items_have_the_tissue_channels_and_panel_presence(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset(cohort, tile_size=64, standardization=None, numpy=True)
    panel = cohort.panel("imc")
    assert ds.panel == panel
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        tissue_channels = cohort.tissue_channels(item["tissue_id"], "imc")
        assert item["image"].shape == (len(tissue_channels), 64, 64)
        assert item["image"].dtype == np.float32
        assert item["channel_names"] == tissue_channels
        assert item["channel_present"].tolist() == [c in tissue_channels for c in panel]
        seen.add(len(tissue_channels))
    assert seen == {len(panel), len(panel) - 1}  # the synthetic panel is ragged


def test_raw_tiles_equal_the_image_pixels(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset(cohort, tile_size=64, standardization=None, numpy=True)
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        expected = raw_tile(cohort, item["tissue_id"], item["row"], item["col"], 64)
        np.testing.assert_array_equal(item["image"], expected)


@pytest.mark.parametrize("method", ["quantile_clipping", "quantile_clipping_log1p"])
@pytest.mark.parametrize("zscore", [True, False])
def test_standardized_tiles_match_numpy_on_the_stored_statistics(
    cohort: spora_sd.Cohort, method: str, zscore: bool
) -> None:
    folder = spec_folder(cohort, method)
    upper = pd.read_parquet(folder / "image_level_upper_quantiles.parquet")
    means = pd.read_parquet(folder / "global_level_means.parquet").iloc[0]
    stds = pd.read_parquet(folder / "global_level_stds.parquet").iloc[0]
    ds = TileDataset(cohort, tile_size=64, standardization=f"{method}/uq_0.99", zscore=zscore, numpy=True)
    for i in (0, len(ds) - 1):
        item = ds[i]
        raw = raw_tile(cohort, item["tissue_id"], item["row"], item["col"], 64)
        tissue_channels = cohort.tissue_channels(item["tissue_id"], "imc")
        for k, name in enumerate(item["channel_names"]):
            u = upper.loc[item["tissue_id"], name]
            x = np.clip(raw[tissue_channels.index(name)], 0.0, u)
            y = x / u if method == "quantile_clipping" else np.log1p(x)
            if zscore:
                y = (y - means[name]) / stds[name]
            np.testing.assert_allclose(item["image"][k], y, rtol=1e-5, atol=1e-5)


def test_lower_quantiles_are_used_when_stored(cohort_copy: Path) -> None:
    from spora_sd.stats.standardization import compute_standardization

    folder = compute_standardization(cohort_copy, "imc", "quantile_clipping", upper_quantile=0.99, lower_quantile=0.2)
    lower = pd.read_parquet(folder / "image_level_lower_quantiles.parquet")
    upper = pd.read_parquet(folder / "image_level_upper_quantiles.parquet")
    cohort = spora_sd.open_cohort(cohort_copy)
    ds = TileDataset(cohort, tile_size=64, standardization=f"quantile_clipping/{folder.name}", zscore=False, numpy=True)
    item = ds[0]
    tissue_id = item["tissue_id"]
    raw = raw_tile(cohort, tissue_id, item["row"], item["col"], 64)
    channels = cohort.tissue_channels(tissue_id, "imc")
    dropped = [c for c in channels if not upper.loc[tissue_id, c] > lower.loc[tissue_id, c]]
    assert item["channel_names"] == [c for c in channels if c not in dropped]
    for k, name in enumerate(item["channel_names"]):
        lo, up = lower.loc[tissue_id, name], upper.loc[tissue_id, name]
        expected = (np.clip(raw[channels.index(name)], lo, up) - lo) / (up - lo)
        np.testing.assert_allclose(item["image"][k], expected, rtol=1e-5, atol=1e-5)


def test_channels_with_unusable_statistics_are_dropped(cohort_copy: Path) -> None:
    cohort = spora_sd.open_cohort(cohort_copy)
    original = spec_folder(cohort, "quantile_clipping")
    folder = spec_folder(cohort, "quantile_clipping", "uq_0.99_image")  # spora-io's spelling of the folder
    shutil.copytree(original, folder)
    original.rename(original.with_name("aside"))
    try:
        tissue_id = cohort.tissue_ids("imc")[0]
        upper = pd.read_parquet(folder / "image_level_upper_quantiles.parquet")
        upper.loc[tissue_id, "CD3E"] = 0.0
        upper.loc[tissue_id, "CD68"] = np.nan
        upper.to_parquet(folder / "image_level_upper_quantiles.parquet")
        stds = pd.read_parquet(folder / "global_level_stds.parquet")
        stds["KRT5"] = np.inf
        stds.to_parquet(folder / "global_level_stds.parquet")
        ds = TileDataset(
            cohort, tile_size=64, standardization="quantile_clipping/uq_0.99", tissues=[tissue_id], numpy=True
        )
        item = ds[0]
    finally:
        shutil.rmtree(folder)
        original.with_name("aside").rename(original)
    for name in ("CD3E", "CD68", "KRT5"):
        assert name not in item["channel_names"]
        assert not item["channel_present"][ds.panel.index(name)]
    assert item["image"].shape[0] == len(cohort.panel("imc")) - 3
    assert np.isfinite(item["image"]).all()


def test_channel_selection(cohort: spora_sd.Cohort) -> None:
    channels = cohort.channels("imc")
    qc = channels.loc[channels["qc_pass"], "channel_name"].tolist()
    uniprot = channels.loc[channels["qc_pass"] & (channels["uniprot_id"].fillna("") != ""), "channel_name"].tolist()
    assert TileDataset(cohort, tile_size=64, channels="qc", numpy=True).panel == qc
    assert TileDataset(cohort, tile_size=64, channels="uniprot", numpy=True).panel == uniprot
    assert "DNA1" not in uniprot and "H3C1" in uniprot  # DNA1 has no accession
    ds = TileDataset(cohort, tile_size=64, channels=["CD3E", "DNA1"], numpy=True)
    assert ds.panel == ["DNA1", "CD3E"]  # panel order, not the order asked
    item = ds[0]
    assert item["channel_names"] == ["DNA1", "CD3E"] and item["image"].shape[0] == 2
    with pytest.raises(InvalidArgumentError, match=r"\['NOPE'\] are not in the 'imc' panel; the panel is \['DNA1'"):
        TileDataset(cohort, tile_size=64, channels=["NOPE"])
    with pytest.raises(InvalidArgumentError, match="expected 'all', 'qc', 'uniprot'"):
        TileDataset(cohort, tile_size=64, channels="some")


def test_ragged_batches_are_padded_to_the_panel(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset(cohort, tile_size=64, numpy=True)
    items = [ds[0], ds[len(ds) - 1]]  # first tissue has the full panel, the last lacks one channel
    assert items[0]["image"].shape[0] != items[1]["image"].shape[0]
    batch = collate(items)
    assert batch["image"].shape == (2, len(ds.panel), 64, 64)
    for b, item in enumerate(items):
        np.testing.assert_array_equal(batch["image"][b][item["channel_present"]], item["image"])
        assert not batch["image"][b][~item["channel_present"]].any()
    assert batch["channel_present"].shape == (2, len(ds.panel))
    assert batch["tissue_id"] == [items[0]["tissue_id"], items[1]["tissue_id"]]


def test_masks_are_cropped_with_the_tile(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset(cohort, tile_size=64, masks=("cells", "tissue", "cell_types"), numpy=True)
    item = ds[len(ds) // 2]
    r, c, tid = item["row"], item["col"], item["tissue_id"]
    seg = cohort.path / "segmentations" / "1_0mpp"
    expected = {
        "cells": read_mask(seg / "cell_masks" / "instances" / f"{tid}.npz"),
        "tissue": read_mask(seg / "tissue_masks" / f"{tid}.npz"),
        "cell_types": read_mask(seg / "cell_masks" / "cell_types" / f"{tid}.npz"),
    }
    for name, mask in expected.items():
        np.testing.assert_array_equal(item["masks"][name], mask[r : r + 64, c : c + 64])
    assert item["masks"]["cells"].dtype == np.int64 and item["masks"]["tissue"].dtype == bool
    batch = collate([item, ds[0]])
    assert batch["masks"]["cells"].shape == (2, 64, 64)
    with pytest.raises(CohortNotFoundError, match="mask 'no_such_task'"):
        TileDataset(cohort, tile_size=64, masks=("no_such_task",))


def test_split_tissues_and_labels(cohort: spora_sd.Cohort) -> None:
    tissues = cohort.tissues[cohort.tissues["modality"] == "imc"].set_index("tissue_id")
    ds = TileDataset(cohort, tile_size=64, split="train", labels=("split", "grade", "subtype"), numpy=True)
    train = tissues.index[tissues["split"] == "train"].tolist()
    assert ds.tissue_ids == train and set(ds.tiles["tissue_id"]) == set(train)
    for i in (0, len(ds) - 1):
        item = ds[i]
        row = tissues.loc[item["tissue_id"]]
        assert item["labels"] == {"split": "train", "grade": int(row["grade"]), "subtype": row["subtype"]}
    batch = collate([ds[0], ds[1]])
    assert batch["labels"]["split"] == ["train", "train"] and batch["labels"]["grade"].dtype.kind == "i"
    one = TileDataset(cohort, tile_size=64, tissues=[train[-1]], numpy=True)
    assert set(one.tiles["tissue_id"]) == {train[-1]}
    with pytest.raises(InvalidArgumentError, match=r"labels=\['nope'\]: no such column.*'grade'"):
        TileDataset(cohort, tile_size=64, labels=("nope",))
    with pytest.raises(InvalidArgumentError, match=r"no 'imc' tissue has split 'validation'; the splits are \["):
        TileDataset(cohort, tile_size=64, split="validation")
    with pytest.raises(InvalidArgumentError, match=r"no 'imc' tissue.*the 'imc' tissues are \['small2025cohort_"):
        TileDataset(cohort, tile_size=64, tissues=["small2025cohort_00000000_0000"])


def test_the_tiling_table_is_used_when_present(cohort: spora_sd.Cohort) -> None:
    (mpp, strategy, size), *_ = cohort.tilings()
    table, _ = cohort.tiling(mpp, strategy, size)
    ds = TileDataset(cohort, tile_size=size, strategy=strategy, numpy=True)
    expected = table.sort_values(["tissue_id", "tile_id"])[["tissue_id", "row", "col"]]
    got = ds.tiles.sort_values(["tissue_id", "row", "col"])
    assert sorted(map(tuple, got.values.tolist())) == sorted(map(tuple, expected.values.tolist()))


@pytest.mark.parametrize("strategy", ["default", "grid"])
def test_grid_from_tissue_masks_equals_compute_tiling(cohort_copy: Path, strategy: str) -> None:
    cohort = spora_sd.open_cohort(cohort_copy)
    computed = TileDataset(cohort, tile_size=48, strategy=strategy, numpy=True).tiles
    spora_sd.compute_tiling(cohort_copy, tile_size=48, strategy=strategy)
    table, _ = cohort.tiling(1.0, strategy, 48)
    assert computed[["tissue_id", "row", "col"]].values.tolist() == table[["tissue_id", "row", "col"]].values.tolist()


def test_grid_edge_tiles_are_zero_padded(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset(cohort, tile_size=128, strategy="grid", masks=("tissue", "cells"), numpy=True)
    tissue_id = ds.tissue_ids[0]
    height, width = zarr.open_array(cohort.image_path(tissue_id, "imc", 1.0) / "0", mode="r").shape[1:]
    edge = ds.tiles.index[(ds.tiles["tissue_id"] == tissue_id) & (ds.tiles["row"] + 128 > height)][0]
    item = ds[int(edge)]
    inside = height - item["row"]
    assert 0 < inside < 128
    assert not item["image"][:, inside:].any() and not item["masks"]["tissue"][inside:].any()
    assert not item["masks"]["cells"][inside:].any()
    assert item["image"][:, :inside].any()


def test_cell_centred_tiles(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset.cell_centred(cohort, tile_size=16, masks=("cells",), standardization=None, numpy=True)
    cells = cohort.cells(columns=[])
    assert len(ds) == len(cells)
    assert sorted(zip(ds.tiles["tissue_id"], ds.tiles["cell_id"], strict=True)) == sorted(
        zip(cells["tissue_id"], cells["cell_id"], strict=True)
    )
    for i in range(0, len(ds), max(1, len(ds) // 20)):
        item = ds[i]
        assert item["image"].shape[1:] == (16, 16)
        # Synthetic cells are ellipses, so the centroid pixel (the tile's centre) belongs to the cell.
        assert item["masks"]["cells"][8, 8] == item["cell_id"]
    # The reader decoded each chunk about once for the whole pass.
    assert ds.reader.stats.chunks_decoded <= 4 * len(ds.tissue_ids)


def test_centres_table(cohort: spora_sd.Cohort) -> None:
    tissue_id = cohort.tissue_ids("imc")[1]
    centres = pd.DataFrame({"tissue_id": [tissue_id, tissue_id], "y": [0.0, 100.2], "x": [3.0, 50.7]})
    ds = TileDataset(cohort, tile_size=10, centres=centres, standardization=None, numpy=True)
    assert ds.tiles[["row", "col"]].values.tolist() == [[-5, -2], [95, 46]]
    item = ds[0]
    np.testing.assert_array_equal(item["image"], raw_tile(cohort, tissue_id, -5, -2, 10))
    assert "cell_id" not in item
    with pytest.raises(InvalidArgumentError, match=r"missing columns \['x'\]"):
        TileDataset(cohort, tile_size=10, centres=centres.drop(columns="x"))


def test_cell_centres_of_a_mask() -> None:
    mask = np.zeros((5, 5), dtype="uint32")
    mask[1:4, 1:4] = 3
    mask[0, 4] = 9
    assert cell_centres(mask).values.tolist() == [[3.0, 2.0, 2.0], [9.0, 0.0, 4.0]]


def test_transform_and_indexing(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset(cohort, tile_size=64, numpy=True, transform=lambda item: {**item, "seen": True})
    assert ds[-1]["seen"] and ds[-1]["row"] == ds[len(ds) - 1]["row"]
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert "TileDataset('imc'" in repr(ds)


def test_he_tiles(cohort: spora_sd.Cohort) -> None:
    ds = TileDataset(cohort, modality="he", tile_size=64, standardization=None, numpy=True)
    item = ds[0]
    assert ds.panel == ["R", "G", "B"] and item["image"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="multiplex modalities only"):
        TileDataset(cohort, modality="he", tile_size=64)


def test_missing_images_are_left_out_with_a_warning(cohort_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    cohort = spora_sd.open_cohort(cohort_copy)
    gone = cohort.tissue_ids("imc")[-1]
    target = cohort.image_path(gone, "imc", 1.0)
    aside = target.with_name("aside")
    target.rename(aside)
    try:
        ds = TileDataset(cohort, tile_size=64, numpy=True)
        assert gone not in ds.tissue_ids and len(ds) > 0
        assert "left out" in caplog.text
    finally:
        aside.rename(target)
