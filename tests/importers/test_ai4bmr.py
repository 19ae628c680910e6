"""ai4bmr-datasets processed folders -> spora cohorts, compared with their source files.

The sources are made by :func:`spora_sd.importers.synthetic_ai4bmr.make_ai4bmr_folder` from the
documented structure (float32 zstd TIFFs, uint16 deflate masks, a snake_case panel, clinical and
per-cell Parquet files with the two-level index); the Keren 2018 case has mask ids from 2 with gaps.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import spora_sd
from spora_sd import layout
from spora_sd.convert.element_names import CELL_TABLE, image_name, labels_name
from spora_sd.convert.plan import element_levels
from spora_sd.datasets.registry import cohort_info
from spora_sd.errors import CohortFormatError, CohortNotFoundError, ExportInputError, TargetExistsError
from spora_sd.importers import ai4bmr as ai4bmr_module
from spora_sd.importers import from_ai4bmr
from spora_sd.importers.synthetic_ai4bmr import DEFAULT_TARGETS, make_ai4bmr_folder
from spora_sd.io.masks import read_mask
from spora_sd.testing import assert_cohorts_equal

FAST = {"standardization": False, "tiling": False}


@pytest.fixture(scope="module")
def jackson(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ai4bmr")
    src = make_ai4bmr_folder(root / "src", name="Jackson2020", n_samples=3, mismatch=True)
    return src, from_ai4bmr(src, root / "datasets")


@pytest.fixture(scope="module")
def keren(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("keren")
    src = make_ai4bmr_folder(root / "src", name="Keren2018", n_samples=2)
    return src, from_ai4bmr(src, root / "datasets", **FAST)


def _processed(src: Path) -> Path:
    return src / "02_processed"


def _source_names(cohort: Path) -> dict[str, str]:
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    return dict(zip(tissues["tissue_id"], tissues["source_name"], strict=True))


def test_valid_cohort_under_the_registry_key(jackson, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cohort = jackson
    assert cohort.name == "jackson2020single"
    report = spora_sd.validate(cohort, deep=True)
    assert report.ok, report.problems
    assert not report.problems  # no warnings either
    # the cohort resolves by the registry's alias, and its curated ontology terms (what LaminDB
    # registration reads, by dataset key) are those of Jackson 2020
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(cohort.parent))
    opened = spora_sd.open_cohort("jackson2020")
    assert opened.path == cohort
    assert cohort_info(cohort.name).tissue.ontology_id == "UBERON:0000310"
    assert spora_sd.to_spatialdata("jackson2020").attrs["spora"]["dataset"] == "jackson2020single"


def test_tissue_ids_patients_and_clinical_columns(jackson) -> None:
    src, cohort = jackson
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet").set_index("source_name")
    clinical = pd.read_parquet(_processed(src) / "metadata/clinical.parquet")
    # the patient column of Jackson 2020 is `pid`: samples 0 and 1 share patient P000
    for sample, row in tissues.iterrows():
        patient = layout.patient_hash(clinical.loc[sample, "pid"], "jackson2020single")
        assert row["patient_id"] == patient
        assert row.name == sample and row["tissue_id"].startswith(f"jackson2020single_{patient}_")
    assert tissues.loc[["sample_0", "sample_1"], "specimen_id"].tolist() == ["0000", "0001"]
    assert tissues.loc["sample_2", "specimen_id"] == "0000"
    assert (tissues["mpp_imc"] == 1.0).all() and (tissues["modality"] == "imc").all()
    # clinical columns carried over; one named like a spora column is prefixed
    assert tissues["grade"].tolist() == clinical.loc[tissues.index, "grade"].tolist()
    assert tissues["er_status"].tolist() == clinical.loc[tissues.index, "er_status"].tolist()
    assert tissues["clinical_modality"].tolist() == ["tma"] * 3


def test_channels_mapped_to_hugo(jackson) -> None:
    _, cohort = jackson
    channels = pd.read_parquet(cohort / "imc/channels.parquet")
    assert channels["channel_name"].tolist() == [
        "HistoneH3",
        "KRT5",
        "MKI67",
        "CD3E",
        "CDH1-CDH3",
        "mystery_marker",  # not in the table: kept, reported
        "DNA1",
    ]
    uniprot = dict(zip(channels["channel_name"], channels["uniprot_id"], strict=True))
    assert uniprot["KRT5"] == "P13647" and uniprot["CD3E"] == "P07766" and uniprot["MKI67"] == "P46013"
    assert uniprot["DNA1"] == "" and uniprot["mystery_marker"] == ""


def test_unknown_target_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_ai4bmr_folder(tmp_path / "src", n_samples=1, size=16)
    with caplog.at_level(logging.WARNING, logger="spora_sd"):
        from_ai4bmr(src, tmp_path / "out", **FAST)
    assert "mystery_marker" in caplog.text


def test_to_spatialdata_equals_the_source(jackson) -> None:
    src, cohort = jackson
    targets = DEFAULT_TARGETS["Jackson2020"]
    sdata = spora_sd.to_spatialdata(cohort)
    names = _source_names(cohort)
    table = sdata.tables[CELL_TABLE]
    channels = pd.read_parquet(cohort / "imc/channels.parquet")["channel_name"].tolist()
    assert list(table.var_names) == channels  # the mapped names, in panel order
    region_key = table.uns["spatialdata_attrs"]["region_key"]
    instance_key = table.uns["spatialdata_attrs"]["instance_key"]
    for tissue_id, sample in names.items():
        pixels = tifffile.imread(_processed(src) / f"images/published/{sample}.tiff")
        image = element_levels(sdata.images[image_name(tissue_id, "imc")])[0]
        np.testing.assert_array_equal(np.asarray(image), pixels)  # float32, bit for bit
        mask = tifffile.imread(_processed(src) / f"masks/published/{sample}.tiff")
        labels = element_levels(sdata.labels[labels_name(tissue_id, "cells")])[0]
        np.testing.assert_array_equal(np.asarray(labels), mask)
        rows = table[(table.obs[region_key].astype(str) == labels_name(tissue_id, "cells")).to_numpy()]
        ids = np.unique(mask)[1:]
        assert sorted(rows.obs[instance_key].astype(int)) == ids.tolist()  # cell count and ids = mask labels
        source = pd.read_parquet(_processed(src) / f"features/intensity/published/{sample}.parquet")
        source = source.droplevel("sample_id").loc[rows.obs[instance_key].astype(int).to_numpy(), targets]
        # the AnnData holds float32 (to_spatialdata's choice); cells.parquet keeps the given float64 exactly
        x = rows.to_df()[list(rows.var_names)].to_numpy()
        np.testing.assert_array_equal(x, source.to_numpy().astype(x.dtype))
        cells = pd.read_parquet(cohort / "metadata/cells.parquet")
        mine = cells[cells["tissue_id"] == tissue_id].set_index("cell_id")[list(rows.var_names)]
        expected = pd.read_parquet(_processed(src) / f"features/intensity/published/{sample}.parquet")
        expected = expected.droplevel("sample_id").loc[mine.index, targets].to_numpy()
        np.testing.assert_array_equal(mine.to_numpy(), expected)


def test_annotations_become_cell_columns(jackson) -> None:
    src, cohort = jackson
    cells = pd.read_parquet(cohort / "metadata/cells.parquet")
    names = _source_names(cohort)
    assert {"cell_type", "class", "cluster"} <= set(cells.columns)
    for tissue_id, sample in names.items():
        rows = cells[cells["tissue_id"] == tissue_id].set_index("cell_id")
        source = pd.read_parquet(_processed(src) / f"metadata/published/{sample}.parquet").droplevel("sample_id")
        shared = rows.index.intersection(source.index)
        assert rows.loc[shared, "cell_type"].tolist() == source.loc[shared, "cell_type"].tolist()
        mask = tifffile.imread(_processed(src) / f"masks/published/{sample}.tiff")
        assert rows.index.tolist() == np.unique(mask)[1:].tolist()
        if sample == "sample_0":  # the mismatch case: one label without annotation, one extra object
            assert rows["cell_type"].isna().sum() == 1
            assert source.index.difference(rows.index).size == 1  # the object that is not in the mask: dropped
        else:
            assert rows["cell_type"].notna().all()


def test_keren_masks_with_ids_from_2_and_gaps(keren) -> None:
    src, cohort = keren
    report = spora_sd.validate(cohort, deep=True)
    assert report.ok, report.problems
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    assert (tissues["modality"] == "mibi").all() and cohort.name == "keren2018structured"
    cells = pd.read_parquet(cohort / "metadata/cells.parquet")
    for tissue_id, sample in _source_names(cohort).items():
        source = tifffile.imread(_processed(src) / f"masks/published/{sample}.tiff")
        kept = read_mask(cohort / f"segmentations/1_0mpp/cell_masks/instances/{tissue_id}.npz")
        np.testing.assert_array_equal(kept, source)  # kept as it is
        ids = cells.loc[cells["tissue_id"] == tissue_id, "cell_id"].to_numpy()
        assert ids.min() == 2 and np.all(np.diff(ids) == 2)  # ids from 2, with gaps, = the mask labels
    assert cells["cell_type"].notna().all()  # from Keren's label_name


def test_danenberg_cell_masks_and_her2_clones(tmp_path: Path) -> None:
    src = make_ai4bmr_folder(tmp_path / "src", name="Danenberg2022", n_samples=2, size=32)
    cohort = from_ai4bmr(src, tmp_path / "out", **FAST)
    assert cohort.name == "danenberg2022breast"
    channels = pd.read_parquet(cohort / "imc/channels.parquet")
    assert channels["channel_name"].tolist() == ["HistoneH3", "CD45RO", "ERBB2", "ERBB2-D8F12", "KRT5", "DNA1"]
    cells = pd.read_parquet(cohort / "metadata/cells.parquet")
    assert {"cell_type", "label", "is_epithelial"} <= set(cells.columns)  # cell_type from cell_phenotype
    assert spora_sd.validate(cohort).ok


def test_patient_key_and_unknown_dataset(tmp_path: Path) -> None:
    src = make_ai4bmr_folder(tmp_path / "src", name="MyLab2025", n_samples=2, size=16)
    with pytest.raises(ExportInputError, match="dataset="):
        from_ai4bmr(src, tmp_path / "out", **FAST)
    cohort = from_ai4bmr(src, tmp_path / "out", dataset="mylab2025", patient_key="patient_id", **FAST)
    tissues = pd.read_parquet(cohort / "metadata/tissues.parquet")
    assert tissues["patient_id"].nunique() == 1  # both samples are patient P000
    with pytest.raises(CohortFormatError, match="--patient-key") as error:
        from_ai4bmr(src, tmp_path / "other", dataset="mylab2025", patient_key="nope", **FAST)
    assert error.value.file.endswith("clinical.parquet")


def test_bad_inputs_name_the_file_and_rule(tmp_path: Path) -> None:
    with pytest.raises(CohortNotFoundError, match="02_processed"):
        from_ai4bmr(tmp_path / "Jackson2020", tmp_path / "out")
    src = make_ai4bmr_folder(tmp_path / "src", n_samples=1, size=16)
    panel_path = _processed(src) / "images/published/panel.parquet"
    panel = pd.read_parquet(panel_path)
    panel.reset_index().to_parquet(panel_path)  # no channel_index index
    with pytest.raises(CohortFormatError, match=r"\[ai4bmr.panel\]") as error:
        from_ai4bmr(src, tmp_path / "out", **FAST)
    assert error.value.file == str(panel_path)
    panel.to_parquet(panel_path)
    mask_path = _processed(src) / "masks/published/sample_0.tiff"
    tifffile.imwrite(mask_path, np.zeros((8, 8), "uint16"))
    with pytest.raises(CohortFormatError, match="mask shape") as error:
        from_ai4bmr(src, tmp_path / "out", **FAST)
    assert error.value.file == str(mask_path)
    assert not (tmp_path / "out" / "jackson2020single").exists()  # nothing left at the target
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_target_and_overwrite(tmp_path: Path) -> None:
    src = make_ai4bmr_folder(tmp_path / "src", n_samples=1, size=16)
    first = from_ai4bmr(src, tmp_path / "out", **FAST)
    with pytest.raises(TargetExistsError):
        from_ai4bmr(src, tmp_path / "out", **FAST)
    again = from_ai4bmr(src, tmp_path / "out", overwrite=True, **FAST)
    assert again == first and spora_sd.validate(again).ok


def test_lazy_tiff_path_writes_the_same_cohort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Larger TIFFs are read through tifffile's zarr store, one band of rows at a time
    src = make_ai4bmr_folder(tmp_path / "src", n_samples=2, size=600)
    in_memory = from_ai4bmr(src, tmp_path / "a", **FAST)
    monkeypatch.setattr(ai4bmr_module, "IN_MEMORY_BYTES", 0)
    lazy = from_ai4bmr(src, tmp_path / "b", **FAST)
    assert_cohorts_equal(lazy, in_memory)


def test_import_from_the_02_processed_folder_with_a_dask_client(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    src = make_ai4bmr_folder(tmp_path / "src", name="Cords2024", n_samples=2, size=32)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster):
            cohort = from_ai4bmr(src / "02_processed", tmp_path / "out", **FAST)
    assert cohort.name == "cords2024cancer"
    serial = from_ai4bmr(src, tmp_path / "serial", **FAST)
    assert_cohorts_equal(cohort, serial)
    shutil.rmtree(serial)
