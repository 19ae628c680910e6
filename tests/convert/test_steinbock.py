"""Real IMC data: steinbock output -> spatialdata-io -> spora cohort -> SpatialData.

The data (tests/data/imc_testdata_steinbock, CC-BY-4.0, see its PROVENANCE.md) are 15 images of 5
channels with 404 DeepCell-segmented cells. spatialdata-io's reader leaves the channel coordinates as
0..4, so the channel names must come from the cell table's var_names, which steinbock took from
panel.csv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import spatialdata_io

import spora_sd
from spora_sd.io.images import open_image_levels, read_image_metadata
from spora_sd.io.masks import read_mask

DATA = Path(__file__).parents[1] / "data" / "imc_testdata_steinbock"
DATASET = "eling2021steinbock"


@pytest.fixture(scope="module")
def sdata():
    return spatialdata_io.steinbock(DATA, labels_kind="deepcell")


@pytest.fixture(scope="module")
def cohort(sdata, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spora_sd.from_spatialdata(sdata, tmp_path_factory.mktemp("steinbock"), dataset=DATASET, mpp=1.0)


@pytest.fixture(scope="module")
def panel() -> list[str]:
    table = pd.read_csv(DATA / "panel.csv")
    return table.loc[table["keep"] == 1, "name"].tolist()


def _csv(source_name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / "intensities_deepcell" / f"{source_name}.csv").set_index("Object").sort_index()


def _assert_equal_csv_means(actual, csv_means: np.ndarray) -> None:
    """cells.h5ad stores the CSV's float64 means as float32: equal after the same rounding, to one float32 step.

    steinbock parsed the CSV with pandas 2's fast float parser, which can be one float64 step off; for a
    value halfway between two float32 values (3.3641597032546997 in mockData2_003) that flips the float32
    rounding. pandas 3 parses exactly, so the h5ad (and the cohort, which copies it) is one step off there.
    """
    np.testing.assert_array_max_ulp(np.asarray(actual), csv_means.astype("float32"), maxulp=1)


def test_needs_mpp(sdata, tmp_path: Path) -> None:
    # the reader sets Identity transformations: pixel units, so the pixel size must be given
    with pytest.raises(spora_sd.SporaError, match="pass mpp="):
        spora_sd.from_spatialdata(sdata, tmp_path, dataset=DATASET)


def test_valid_cohort_with_real_marker_names(cohort: Path, panel: list[str]) -> None:
    report = spora_sd.validate(cohort, deep=True)
    assert report.ok, report.problems
    assert panel == ["Ag107", "Cytokeratin 5", "Laminin", "YBX1", "H3K27Ac"]
    channels = pd.read_parquet(cohort / "imc/channels.parquet")
    assert channels["channel_name"].tolist() == panel
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    assert len(tissues) == 15 and tissues["tissue_id"].str.startswith(f"{DATASET}_").all()
    assert sorted(tissues["source_name"]) == sorted(p.name.removesuffix(".ome.tiff") for p in (DATA / "ome").iterdir())
    for tid in tissues["tissue_id"]:
        assert read_image_metadata(cohort / f"imc/1_0mpp/images/{tid}.ome.zarr").channel_names == panel


def test_cells_and_intensities_equal_steinbock_csv(sdata, cohort: Path, panel: list[str]) -> None:
    cells = pd.read_parquet(cohort / "metadata/cells.parquet")
    assert len(cells) == 404
    names = pd.read_parquet(cohort / "metadata/tissues.parquet").set_index("tissue_id")["source_name"]
    source = sdata.tables["table"]
    for tid, rows in cells.groupby("tissue_id"):
        expected = _csv(names[tid])
        rows = rows.set_index("cell_id").sort_index()
        assert rows.index.tolist() == expected.index.tolist()
        _assert_equal_csv_means(rows[panel].to_numpy(), expected[panel].to_numpy())
        # and bit for bit the reader's float32 values
        read = source[(source.obs["region"] == f"{names[tid]}_labels").to_numpy()]
        read = read[np.argsort(read.obs["cell_id"].to_numpy())]
        np.testing.assert_array_equal(rows[panel].to_numpy(), read[:, panel].X)


def test_pixels_and_masks_are_the_source(sdata, cohort: Path) -> None:
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    for tid, source in zip(tissues["tissue_id"], tissues["source_name"], strict=True):
        image = np.asarray(open_image_levels(cohort / f"imc/1_0mpp/images/{tid}.ome.zarr")[0])
        expected = np.asarray(sdata.images[f"{source}_image"].data)
        assert image.dtype == expected.dtype and np.array_equal(image, expected)
        mask = read_mask(cohort / f"segmentations/1_0mpp/cell_masks/instances/{tid}.npz")
        assert np.array_equal(mask, np.asarray(sdata.labels[f"{source}_labels"].data))


def test_to_spatialdata(cohort: Path, panel: list[str]) -> None:
    back = spora_sd.to_spatialdata(cohort)
    table = back.tables["cells"]
    assert table.n_obs == 404
    assert table.var_names.tolist() == panel
    names = pd.read_parquet(cohort / "metadata/tissues.parquet").set_index("tissue_id")["source_name"]
    for tid in names.index:
        rows = table[table.obs["tissue_id"] == tid]
        expected = _csv(names[tid])
        assert rows.obs["cell_id"].tolist() == expected.index.tolist()
        _assert_equal_csv_means(rows.X, expected[panel].to_numpy())
    assert len(back.images) == 15 and back.attrs["spora"]["dataset"] == DATASET


def test_patient_key_groups_the_rois_of_one_slide(sdata, tmp_path: Path) -> None:
    # the 15 ROIs come from 5 acquisitions (.mcd files): one patient each, three specimens
    root = spora_sd.from_spatialdata(
        sdata, tmp_path / DATASET, mpp=1.0, patient_key="image_source_file", standardization=False, tiling=False
    )
    tissues = pd.read_parquet(root / "metadata/tissues.parquet")
    assert tissues["patient_id"].nunique() == 5
    assert tissues.groupby("patient_id")["specimen_id"].apply(sorted).tolist() == [["0000", "0001", "0002"]] * 5
    assert spora_sd.validate(root).ok
