"""TileDataset.from_spatialdata gives the same tiles as the cohort path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel

import spora_sd
from spora_sd.convert import element_names
from spora_sd.errors import CohortNotFoundError
from spora_sd.ml import Standardizer, TileDataset


@pytest.fixture(scope="module")
def cohort(small_cohort: Path) -> spora_sd.Cohort:
    return spora_sd.open_cohort(small_cohort)


@pytest.fixture(scope="module")
def sdata(cohort: spora_sd.Cohort) -> sd.SpatialData:
    return spora_sd.to_spatialdata(cohort)


@pytest.fixture(scope="module")
def sdata_on_disk(cohort: spora_sd.Cohort, tmp_path_factory: pytest.TempPathFactory) -> sd.SpatialData:
    """Written with spatialdata and read back: images are dask arrays over spatialdata's own Zarr store."""
    from spora_sd.convert.store import write_spatialdata

    path = tmp_path_factory.mktemp("ml_sdata") / "cohort.zarr"
    one = cohort.tissue_ids("imc")[-1]  # the tissue that lacks a channel
    write_spatialdata(spora_sd.to_spatialdata(cohort, modalities=["imc"], tissues=[one]), path)
    return sd.read_zarr(path)


def assert_same_items(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "masks":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=name)
        elif isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize(("which", "tile_size"), [("sdata", 64), ("sdata", 48), ("sdata_on_disk", 64)])
def test_from_spatialdata_equals_the_cohort_path(
    cohort: spora_sd.Cohort, request: pytest.FixtureRequest, which: str, tile_size: int
) -> None:
    sdata = request.getfixturevalue(which)
    standardizer = Standardizer.from_cohort(cohort, "imc", "quantile_clipping_log1p/uq_0.99")
    options = {
        "tile_size": tile_size,
        "standardization": standardizer,
        "masks": ("cells", "tissue", "cell_types"),
        "labels": ("split", "grade"),
        "channels": "qc",
        "numpy": True,
        "tissues": [
            element_names.parse_element_name(name).tissue_id for name in sdata.images if name.endswith("__imc")
        ],
    }
    from_cohort = TileDataset(cohort, **options)
    from_sdata = TileDataset.from_spatialdata(sdata, **options)
    assert from_sdata.panel == from_cohort.panel
    pd.testing.assert_frame_equal(from_sdata.tiles, from_cohort.tiles)
    for i in range(len(from_cohort)):
        assert_same_items(from_sdata[i], from_cohort[i])


def test_from_spatialdata_cell_centred_and_split(cohort: spora_sd.Cohort, sdata: sd.SpatialData) -> None:
    a = TileDataset.cell_centred(cohort, tile_size=16, split="test", standardization=None, numpy=True)
    b = TileDataset.from_spatialdata(sdata, tile_size=16, centres="cells", split="test", numpy=True)
    pd.testing.assert_frame_equal(a.tiles, b.tiles)
    assert_same_items(a[len(a) - 1], b[len(b) - 1])


def test_from_spatialdata_in_memory_without_tables(cohort: spora_sd.Cohort) -> None:
    tid = cohort.tissue_ids("imc")[0]
    pixels = np.asarray(cohort.image(tid, "imc"))
    image = Image2DModel.parse(pixels, dims=("c", "y", "x"), c_coords=cohort.tissue_channels(tid, "imc"))
    ds = TileDataset.from_spatialdata(
        sd.SpatialData(images={element_names.image_name(tid, "imc"): image}), tile_size=32, strategy="grid", numpy=True
    )
    assert ds.panel == cohort.tissue_channels(tid, "imc")
    height, width = pixels.shape[1:]
    edge = ds.tiles.index[(ds.tiles["row"] + 32 > height) | (ds.tiles["col"] + 32 > width)][0]
    item = ds[int(edge)]
    window = pixels[:, item["row"] : item["row"] + 32, item["col"] : item["col"] + 32]
    expected = np.zeros((len(pixels), 32, 32), dtype="float32")
    expected[:, : window.shape[1], : window.shape[2]] = window
    np.testing.assert_array_equal(item["image"], expected)
    with pytest.raises(CohortNotFoundError, match="__cells"):
        TileDataset.from_spatialdata(
            sd.SpatialData(images={element_names.image_name(tid, "imc"): image}), masks=("cells",)
        )
    with pytest.raises(CohortNotFoundError, match="__codex"):
        TileDataset.from_spatialdata(
            sd.SpatialData(images={element_names.image_name(tid, "imc"): image}), modality="codex"
        )
