"""MCMICRO-shaped folders (tests/importers/mcmicro_folder.py) -> ``from_mcmicro`` -> cohort, compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from tests.importers.mcmicro_folder import MARKERS, make_mcmicro_sample

import spora_sd
from spora_sd.errors import CohortFormatError, ExportInputError
from spora_sd.importers import from_mcmicro
from spora_sd.importers.mcmicro import physical_pixel_size
from spora_sd.io.images import open_image_levels, read_image_metadata
from spora_sd.io.masks import read_mask

CHANNELS = ["DNA1", "CD3E", "MKI67", "panCK", "mystery_marker"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mcmicro") / "runs"
    for i in range(2):
        make_mcmicro_sample(root, f"slide{i}", seed=i)  # the same size: kept apart by coordinate systems
    return root


@pytest.fixture(scope="module")
def cohort(runs: Path) -> Path:
    return from_mcmicro(runs, runs.parent / "lin2023cycif")


def test_valid_cohort(cohort: Path) -> None:
    report = spora_sd.validate(cohort, deep=True)
    assert report.ok, report.problems
    assert not report.problems
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    assert sorted(tissues["source_name"]) == ["slide0", "slide1"]
    assert (tissues["modality"] == "cycif").all() and np.allclose(tissues["mpp_cycif"], 0.65)  # from OME-XML
    assert pd.read_parquet(cohort / "cycif/channels.parquet")["channel_name"].tolist() == CHANNELS


def test_pixels_masks_and_cells_equal_the_source(runs: Path, cohort: Path) -> None:
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet").set_index("tissue_id")
    cells = pd.read_parquet(cohort / "metadata/cells.parquet")
    sdata = spora_sd.to_spatialdata(cohort)
    assert sdata.tables["cells"].n_obs == len(cells)
    for tissue_id, sample in tissues["source_name"].items():
        folder = runs / sample
        path = cohort / f"cycif/0_65mpp/images/{tissue_id}.ome.zarr"
        np.testing.assert_array_equal(
            np.asarray(open_image_levels(path)[0]), tifffile.imread(folder / f"registration/{sample}.ome.tif")
        )
        assert read_image_metadata(path).channel_names == CHANNELS
        mask = tifffile.imread(folder / f"segmentation/unmicst-{sample}/cell.ome.tif")
        np.testing.assert_array_equal(
            read_mask(cohort / f"segmentations/0_65mpp/cell_masks/instances/{tissue_id}.npz"), mask
        )
        source = pd.read_csv(folder / f"quantification/{sample}--unmicst_cell.csv").set_index("CellID")
        rows = cells[cells["tissue_id"] == tissue_id].set_index("cell_id").sort_index()
        assert rows.index.tolist() == source.index.tolist()
        np.testing.assert_array_equal(rows[CHANNELS].to_numpy(), source[MARKERS].to_numpy())
        assert rows["area"].tolist() == source["Area"].tolist()  # snake_case column names


def test_nuclei_segmentation_and_one_folder(runs: Path, tmp_path: Path) -> None:
    cohort = from_mcmicro(runs / "slide0", tmp_path / "one2025nuclei", segmentation="nuclei", standardization=False)
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    tissue_id = tissues["tissue_id"].item()
    mask = tifffile.imread(runs / "slide0/segmentation/unmicst-slide0/nuclei.ome.tif")
    np.testing.assert_array_equal(
        read_mask(cohort / f"segmentations/0_65mpp/cell_masks/instances/{tissue_id}.npz"), mask
    )
    assert spora_sd.validate(cohort).ok


def test_pixel_size_and_bad_folders(tmp_path: Path) -> None:
    folder = make_mcmicro_sample(tmp_path / "runs", "nosize", mpp=None, size=32)
    assert physical_pixel_size(folder / "registration/nosize.ome.tif") is None
    with pytest.raises(ExportInputError, match="--mpp"):
        from_mcmicro(folder, tmp_path / "x2025y")
    assert spora_sd.validate(from_mcmicro(folder, tmp_path / "x2025y", mpp=0.5, tiling=False)).ok
    tma = make_mcmicro_sample(tmp_path / "tma", "core", size=32, tma=True)
    with pytest.raises(CohortFormatError, match="TMA"):
        from_mcmicro(tma, tmp_path / "z2025y")
    with pytest.raises(CohortFormatError, match="markers.csv"):
        from_mcmicro(tmp_path / "tma" / "core" / "qc", tmp_path / "z2025y")
