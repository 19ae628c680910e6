"""The reader: metadata eagerly, pixels lazily, partial copies open."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import spora_sd
from spora_sd.errors import CohortFormatError, CohortNotFoundError
from spora_sd.io.cohort import open_cohort


def test_open_exposes_metadata(small_cohort: Path) -> None:
    cohort = open_cohort(small_cohort)
    assert cohort.dataset == "small2025cohort"
    assert open_cohort(cohort) is cohort
    assert cohort.modalities == ["he", "imc"]
    assert cohort.resolutions("imc") == [1.0]
    assert "tissue_id" in cohort.tissues.columns
    imc = cohort.tissue_ids("imc")
    assert len(imc) == 4
    panel = cohort.panel("imc")
    assert panel == cohort.channels("imc")["channel_name"].tolist()
    cpt = cohort.channels_per_tissue("imc")
    assert cpt.index.name == "tissue_id" and list(cpt.columns) == panel
    ragged = [t for t in imc if len(cohort.tissue_channels(t, "imc")) < len(panel)]
    assert ragged, "the synthetic cohort must have a ragged panel"
    for tid in imc:
        assert cohort.image(tid, "imc").shape[0] == len(cohort.tissue_channels(tid, "imc"))
    assert repr(cohort).startswith("Cohort('small2025cohort'")


def test_images_are_lazy_dask_over_zarr(small_cohort: Path) -> None:
    cohort = open_cohort(small_cohort)
    tid = cohort.tissue_ids("imc")[0]
    img = cohort.image(tid, "imc")
    assert img.chunksize[1:] == (min(256, img.shape[1]), min(256, img.shape[2]))
    crop = img[:, :16, :16].compute()
    assert crop.shape == (img.shape[0], 16, 16)
    assert cohort.image_metadata(tid, "imc").channel_names == cohort.tissue_channels(tid, "imc")


def test_cells_column_selection(small_cohort: Path) -> None:
    cohort = open_cohort(small_cohort)
    first = cohort.tissue_ids("imc")[0]
    cells = cohort.cells(columns=["cell_type"], tissues=[first])
    assert list(cells.columns) == ["tissue_id", "cell_id", "cell_type"]
    assert set(cells["tissue_id"]) == {first}
    assert cohort.intensity_columns("imc")


def test_masks(small_cohort: Path) -> None:
    cohort = open_cohort(small_cohort)
    tid = cohort.tissue_ids("imc")[0]
    inst = cohort.instance_mask(tid)
    assert inst.shape == cohort.image(tid, "imc").shape[1:]
    assert set(np.unique(cohort.tissue_mask(tid))) <= {0, 1}
    assert "cell_types" in cohort.tasks()
    enc = cohort.label_encoder("cell_types")
    assert enc and all(v >= 1 for v in enc.values())
    sem = cohort.semantic_mask(tid, "cell_types")
    assert set(np.unique(sem)) <= {0, *enc.values()}
    cell_ids = cohort.cells(columns=[], tissues=[tid])["cell_id"].to_numpy()
    np.testing.assert_array_equal(np.sort(cell_ids), np.unique(inst[inst > 0]))


def test_standardization_both_spellings(small_cohort: Path, tmp_path: Path) -> None:
    cohort = open_cohort(small_cohort)
    specs = cohort.standardization_specs("imc")
    assert ("quantile_clipping", "uq_0.99") in specs
    stats = cohort.standardization("imc", "quantile_clipping", "uq_0.99")
    assert {"image_level_upper_quantiles", "global_level_means", "global_level_stds"} <= set(stats)
    # the spora-io reader spells the folder uq_0.99_image: both spellings resolve
    copy = tmp_path / cohort.dataset
    shutil.copytree(small_cohort, copy)
    folder = copy / "imc/1_0mpp/standardization/quantile_clipping"
    (folder / "uq_0.99").rename(folder / "uq_0.99_image")
    again = open_cohort(copy).standardization("imc", "quantile_clipping", "uq_0.99")
    assert again["global_level_means"].equals(stats["global_level_means"])
    assert open_cohort(copy).standardization("imc", "quantile_clipping", "uq_0.99_image").keys() == stats.keys()


def test_tiling(small_cohort: Path) -> None:
    cohort = open_cohort(small_cohort)
    tilings = cohort.tilings()
    assert tilings and tilings[0][1] == "default"
    mpp, strategy, size = tilings[0]
    coords, stats = cohort.tiling(mpp, strategy, size)
    assert list(coords.columns[:4]) == ["tissue_id", "tile_id", "row", "col"]
    assert stats is not None and "num_tiles" in stats.columns


def test_partial_copy_opens_and_lists_missing(small_cohort: Path, tmp_path: Path) -> None:
    copy = tmp_path / "small2025cohort"
    shutil.copytree(small_cohort, copy)
    shutil.rmtree(copy / "he")
    tid = open_cohort(copy).tissue_ids("imc")[1]
    shutil.rmtree(open_cohort(copy).image_path(tid, "imc"))
    cohort = open_cohort(copy)
    assert cohort.modalities == ["imc"]
    assert "he/" in cohort.missing
    assert f"imc/1_0mpp/images/{tid}.ome.zarr" in cohort.missing
    with pytest.raises(CohortNotFoundError, match=tid):
        cohort.image(tid, "imc")
    report = spora_sd.validate(copy, allow_partial=True)
    assert report.ok and report.warnings
    assert not spora_sd.validate(copy).ok


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(CohortNotFoundError):
        open_cohort(tmp_path / "nope")
    (tmp_path / "empty2025x").mkdir()
    with pytest.raises(CohortFormatError, match="tissues.parquet"):
        open_cohort(tmp_path / "empty2025x")
