"""Real IMC data: the steinbock folder in tests/data -> ``from_steinbock`` -> cohort, compared with the source.

The data (tests/data/imc_testdata_steinbock, CC-BY-4.0, see its PROVENANCE.md): 15 images of 5
channels from 5 acquisition files, 404 DeepCell-segmented cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import spora_sd
from spora_sd.errors import CohortFormatError, CohortNotFoundError, ExportInputError
from spora_sd.importers import from_steinbock
from spora_sd.io.images import open_image_levels

DATA = Path(__file__).parents[1] / "data" / "imc_testdata_steinbock"
DATASET = "eling2021steinbock"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return from_steinbock(DATA, tmp_path_factory.mktemp("steinbock") / DATASET, patient_key="image_source_file")


def test_valid_cohort_with_hugo_channel_names(cohort: Path) -> None:
    report = spora_sd.validate(cohort, deep=True)
    assert report.ok, report.problems
    assert not report.problems  # obs columns were made snake_case: no warnings
    channels = pd.read_parquet(cohort / "imc/channels.parquet")
    # panel.csv names: Ag107, Cytokeratin 5, Laminin, YBX1, H3K27Ac
    assert channels["channel_name"].tolist() == ["Ag107", "KRT5", "Laminin", "YBX1", "H3K27ac"]
    assert channels.set_index("channel_name").loc["KRT5", "uniprot_id"] == "P13647"
    assert channels.set_index("channel_name").loc["YBX1", "uniprot_id"] == "P67809"


def test_one_patient_per_acquisition_file(cohort: Path) -> None:
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    assert len(tissues) == 15 and tissues["patient_id"].nunique() == 5
    assert sorted(tissues["specimen_id"].value_counts().index) == ["0000", "0001", "0002"]
    assert (tissues["mpp_imc"] == 1.0).all()


def test_cells_pixels_and_intensities_equal_the_source(cohort: Path) -> None:
    cells = pd.read_parquet(cohort / "metadata/cells.parquet")
    assert len(cells) == 404
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet").set_index("tissue_id")
    sdata = spora_sd.to_spatialdata(cohort)
    assert sdata.tables["cells"].n_obs == 404
    for tissue_id, name in tissues["source_name"].items():
        source = tifffile.imread(DATA / "ome" / f"{name}.ome.tiff")
        image = open_image_levels(cohort / f"imc/1_0mpp/images/{tissue_id}.ome.zarr")[0]
        np.testing.assert_array_equal(np.asarray(image), source)
        csv = pd.read_csv(DATA / "intensities_deepcell" / f"{name}.csv").set_index("Object").sort_index()
        rows = cells[cells["tissue_id"] == tissue_id].set_index("cell_id").sort_index()
        assert rows.index.tolist() == csv.index.tolist()
        # cells.h5ad stores the CSV's means as float32
        actual = rows[["Ag107", "KRT5", "Laminin", "YBX1", "H3K27ac"]].to_numpy()
        expected = csv[["Ag107", "Cytokeratin 5", "Laminin", "YBX1", "H3K27Ac"]].to_numpy().astype("float32")
        np.testing.assert_array_max_ulp(actual.astype("float32"), expected, maxulp=1)
    assert {"area", "centroid_0", "image_acquisition_description"} <= set(cells.columns)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(CohortNotFoundError):
        from_steinbock(tmp_path / "missing", tmp_path / "x2025y")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CohortFormatError, match="cells.h5ad") as error:
        from_steinbock(tmp_path / "empty", tmp_path / "x2025y")
    assert error.value.rule == "steinbock.files"
    with pytest.raises(ExportInputError, match="not a column"):
        from_steinbock(DATA, tmp_path / "x2025y", patient_key="nope")
    assert not (tmp_path / "x2025y").exists()
