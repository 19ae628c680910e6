"""Synthetic cohorts: valid, realistic in the ways the layout cares about, and deterministic per seed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spora_sd
from spora_sd import layout
from spora_sd.datasets.synthetic import CELL_TYPES, MARKERS, make_synthetic_cohort
from spora_sd.datasets.synthetic.rendering import _downsample, _label_means
from spora_sd.io.cohort import open_cohort

SMALL = {"n_tissues": 4, "image_size": 72, "n_cells": 25, "n_channels": 6}


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMC + H&E at two resolutions with a 2-level pyramid, sides that are not multiples of 256."""
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_cohort(
        root,
        name="synth2025test",
        n_tissues=5,
        image_size=(90, 70),
        n_cells=30,
        n_channels=8,
        resolutions=(1.0, 2.0),
        n_levels=2,
        seed=7,
    )


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob(pattern)) if p.is_file()}


def _zarr_files(root: Path) -> dict[str, bytes]:
    """Every file of every image (zarr.json metadata and shard files)."""
    return {k: v for k, v in _files(root, "*").items() if ".ome.zarr/" in k}


def test_validates_with_zero_problems(cohort_dir: Path) -> None:
    report = spora_sd.validate(cohort_dir)
    assert report.ok, str(report)
    assert len(report.errors) == 0 and len(report.warnings) == 0, str(report)


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = make_synthetic_cohort(tmp_path / "a", **SMALL, seed=3)
    b = make_synthetic_cohort(tmp_path / "b", **SMALL, seed=3)
    c = make_synthetic_cohort(tmp_path / "c", **SMALL, seed=4)
    # Tables and zarr arrays (metadata and shard files) are byte-identical; npz files carry zip
    # timestamps, so masks are compared as arrays.
    assert _files(a, "*.parquet") and _files(a, "*.parquet") == _files(b, "*.parquet")
    assert _zarr_files(a) and _zarr_files(a) == _zarr_files(b)
    masks_a, masks_b = sorted(a.rglob("*.npz")), sorted(b.rglob("*.npz"))
    assert [p.relative_to(a) for p in masks_a] == [p.relative_to(b) for p in masks_b]
    for pa, pb in zip(masks_a, masks_b, strict=True):
        np.testing.assert_array_equal(np.load(pa)["mask"], np.load(pb)["mask"])
    assert _files(a, "cells.parquet") != _files(c, "cells.parquet")
    assert open_cohort(a).tissue_ids() == open_cohort(c).tissue_ids()  # ids do not depend on the seed


def test_ragged_panel_qc_and_nuclear_markers(cohort_dir: Path) -> None:
    cohort = open_cohort(cohort_dir)
    channels = cohort.channels("imc")
    panel = channels["channel_name"].tolist()
    assert panel == [m.name for m in MARKERS[:8]]
    assert (~channels["qc_pass"]).sum() == 1 and not channels["qc_pass"].iloc[-1]
    nuclear = channels.loc[channels["is_nuclear_marker"], "channel_name"].tolist()
    assert {"DNA1", "H3C1"} <= set(nuclear)
    assert channels.set_index("channel_name").loc["DNA1", "uniprot_id"] == ""
    cpt = cohort.channels_per_tissue("imc")
    lacking = cpt.index[~cpt.all(axis=1)].tolist()
    assert lacking == [cohort.tissue_ids("imc")[-1]]
    assert not cpt.loc[lacking[0], panel[-2]]
    for tid in cohort.tissue_ids("imc"):
        measured = cohort.tissue_channels(tid, "imc")
        for mpp in (1.0, 2.0):
            assert cohort.image_metadata(tid, "imc", mpp).channel_names == measured
            assert cohort.image(tid, "imc", mpp).shape[0] == len(measured)
    cells = cohort.cells(tissues=lacking)
    assert cells[panel[-2]].isna().all() and cells[panel[0]].notna().all()


def test_uniprot_ids_are_real_accessions() -> None:
    from spora_sd.ontologies.files import uniprot_entries
    from spora_sd.ontologies.proteins import uniprot_id

    entries = uniprot_entries("HUMAN")
    for marker in MARKERS:
        if not marker.uniprot_id:
            assert marker.name.startswith("DNA") and marker.is_nuclear_marker
            continue
        # the accession is the one of the Swiss-Prot entry we name, in the shipped UniProt release
        assert entries[marker.entry_name] == marker.uniprot_id, marker.name
        looked_up = uniprot_id(marker.name)
        assert looked_up in (None, marker.uniprot_id), marker.name


def test_tissues_table_and_registered_he(cohort_dir: Path) -> None:
    cohort = open_cohort(cohort_dir)
    tissues = cohort.tissues
    assert tissues.duplicated(["tissue_id", "modality"]).sum() == 0
    both = tissues.groupby("tissue_id")["modality"].nunique()
    registered = both.index[both == 2]
    assert len(registered) >= 1 and (both == 1).any()
    assert set(tissues.loc[tissues["tissue_id"].isin(registered), "alignment"]) == {"exact"}
    assert set(tissues.loc[~tissues["tissue_id"].isin(registered), "alignment"]) == {"no alignment"}
    # one patient with two specimens of one biopsy; ids built from the patient hash
    first = tissues.drop_duplicates("tissue_id").iloc[:2]
    assert first["patient_id"].nunique() == 1 and first["specimen_id"].tolist() == ["0000", "0001"]
    assert first["biopsy_id"].nunique() == 1
    assert first["patient_id"].iloc[0] == layout.patient_hash("SYN-P0000", "synth2025test")
    assert set(tissues["split"]) == {"train", "test"}
    assert {"grade", "subtype", "age", "original_patient_id", "mpp_imc", "mpp_he"} <= set(tissues.columns)
    he_rows = tissues[tissues["modality"] == "imc"]
    assert (he_rows["mpp_imc"] == 1.0).all()
    assert tissues.loc[~tissues["tissue_id"].isin(registered), "mpp_he"].isna().all()
    for tid in registered:
        for mpp in (1.0, 2.0):
            he = cohort.image(tid, "he", mpp)
            imc = cohort.image(tid, "imc", mpp)
            assert he.dtype == np.uint8 and he.shape[0] == 3 and he.shape[1:] == imc.shape[1:]
    # the H&E is drawn from the same cells: nuclei (dark) sit where the DNA channel is bright
    tid = registered[0]
    he = cohort.image(tid, "he").compute().astype(float).mean(axis=0)
    dna = cohort.image(tid, "imc").compute()[cohort.tissue_channels(tid, "imc").index("DNA1")]
    nuclei = dna > np.quantile(dna, 0.9)
    assert he[nuclei].mean() < he[~nuclei].mean() - 40


def test_masks_match_images_at_every_resolution(cohort_dir: Path) -> None:
    cohort = open_cohort(cohort_dir)
    assert cohort.mask_resolutions() == [1.0, 2.0]
    assert cohort.tasks(1.0) == ["cell_types"] and cohort.tasks(2.0) == []
    assert not cohort.paths.instance_masks_dir(2.0).exists()
    for tid in cohort.tissue_ids():
        modality = "imc" if tid in cohort.tissue_ids("imc") else "he"
        full = cohort.image(tid, modality, 1.0).shape[1:]
        coarse = cohort.image(tid, modality, 2.0).shape[1:]
        assert coarse == tuple(math.ceil(s / 2) for s in full)
        assert cohort.tissue_mask(tid, 1.0).shape == full
        assert cohort.tissue_mask(tid, 2.0).shape == coarse
        assert cohort.instance_mask(tid, 1.0).shape == full
        assert cohort.semantic_mask(tid, "cell_types", 1.0).shape == full
        # pyramid: level 1 is half of level 0
        levels = cohort.image_levels(tid, modality, 1.0)
        assert len(levels) == 2 and levels[1].shape[1:] == tuple(s // 2 for s in full)


def test_instance_labels_and_cell_types_match_cells_table(cohort_dir: Path) -> None:
    cohort = open_cohort(cohort_dir)
    cells = cohort.cells()
    encoder = cohort.label_encoder("cell_types")
    assert encoder == {t.name: i + 1 for i, t in enumerate(CELL_TYPES)}
    assert isinstance(cells["cell_type"].dtype, pd.CategoricalDtype)
    for tid, group in cells.groupby("tissue_id", observed=True):
        instance = cohort.instance_mask(str(tid))
        labels = np.unique(instance)
        labels = labels[labels > 0]
        assert labels.tolist() == group["cell_id"].tolist() == list(range(1, len(group) + 1))
        semantic = cohort.semantic_mask(str(tid), "cell_types")
        np.testing.assert_array_equal(semantic > 0, instance > 0)
        expected = group["cell_type"].map(encoder).to_numpy().astype(int)
        got = semantic[instance > 0]
        np.testing.assert_array_equal(got, expected[instance[instance > 0] - 1])
        categories = {t.name: t.category for t in CELL_TYPES}
        assert (group["cell_category"].astype(str) == group["cell_type"].astype(str).map(categories)).all()
        assert cohort.tissue_mask(str(tid))[instance > 0].all()  # cells lie in the tissue
    assert cells["cell_type"].nunique() >= 4


def test_mean_intensities_equal_brute_force(cohort_dir: Path) -> None:
    cohort = open_cohort(cohort_dir)
    cells = cohort.cells()
    for tid in cohort.tissue_ids("imc")[-2:]:
        image = cohort.image(tid, "imc").compute()
        instance = cohort.instance_mask(tid)
        rows = cells[cells["tissue_id"] == tid].set_index("cell_id")
        for k, channel in enumerate(cohort.tissue_channels(tid, "imc")):
            brute = np.array([image[k][instance == label].mean() for label in rows.index])
            np.testing.assert_allclose(rows[channel].to_numpy(), brute, rtol=1e-6)


def test_expression_depends_on_cell_type(cohort_dir: Path) -> None:
    cells = open_cohort(cohort_dir).cells()
    by_type = cells.groupby("cell_type", observed=True)[["CD3E", "MS4A1", "CD68", "KRT5", "VIM"]].mean()
    assert by_type["CD3E"].idxmax() == "T cell"
    assert by_type["MS4A1"].idxmax() == "B cell"
    assert by_type["CD68"].idxmax() == "macrophage"
    assert by_type["KRT5"].idxmax() == "tumor cell"
    assert by_type["VIM"].idxmax() == "stromal cell"


def test_derived_products_written(cohort_dir: Path) -> None:
    cohort = open_cohort(cohort_dir)
    for mpp in (1.0, 2.0):
        assert sorted(cohort.standardization_specs("imc", mpp)) == [
            ("quantile_clipping", "uq_0.99"),
            ("quantile_clipping_log1p", "uq_0.99"),
        ]
    expected = []
    for mpp in (1.0, 2.0):
        smallest = min(
            min(cohort.image(t, "imc" if t in cohort.tissue_ids("imc") else "he", mpp).shape[1:])
            for t in cohort.tissue_ids()
        )
        expected.append((mpp, "default", 2 ** int(math.log2(smallest))))
    assert cohort.tilings() == expected


def test_unimodal_float_and_exact_sizes(tmp_path: Path) -> None:
    root = make_synthetic_cohort(
        tmp_path,
        name="flat2025x",
        n_tissues=2,
        modalities=("codex",),
        image_size=(300, 270),
        size_jitter=0,
        n_cells=40,
        n_channels=3,
        dtype="float32",
        tiling=False,
    )
    cohort = open_cohort(root)
    assert cohort.modalities == ["codex"]
    assert cohort.tissues["alignment"].isna().all()
    for tid in cohort.tissue_ids():
        image = cohort.image(tid, "codex")
        assert image.dtype == np.float32 and image.shape[1:] == (300, 270)
    assert spora_sd.validate(root).ok


def test_he_only_and_explicit_he_tissues(tmp_path: Path) -> None:
    he_only = make_synthetic_cohort(
        tmp_path, name="he2025x", n_tissues=2, modalities=("he",), image_size=48, n_cells=10, tiling=False
    )
    cohort = open_cohort(he_only)
    assert cohort.modalities == ["he"] and len(cohort.tissue_ids("he")) == 2
    assert "DNA1" not in cohort.cell_columns and "cell_type" in cohort.cell_columns
    assert spora_sd.validate(he_only).ok
    chosen = make_synthetic_cohort(
        tmp_path,
        name="pick2025x",
        n_tissues=3,
        image_size=48,
        n_cells=10,
        he_tissues=[1],
        standardization=False,
        tiling=False,
    )
    cohort = open_cohort(chosen)
    assert cohort.tissue_ids("he") == [cohort.tissue_ids("imc")[1]]


def test_overwrite_and_no_leftovers(tmp_path: Path) -> None:
    kwargs = {"n_tissues": 1, "image_size": 40, "n_cells": 5, "standardization": False, "tiling": False}
    root = make_synthetic_cohort(tmp_path, **kwargs)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_synthetic_cohort(tmp_path, **kwargs)
    (root / "stale.txt").write_text("from an older cohort")
    assert make_synthetic_cohort(tmp_path, **kwargs, overwrite=True) == root
    assert not (root / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]  # no temporary folder left


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad_Name"}, "dataset key"),
        ({"modalities": ("imc", "codex")}, "one multiplex"),
        ({"modalities": ("ihc_CD3E",)}, "one multiplex"),
        ({"n_channels": 2}, "n_channels"),
        ({"n_channels": len(MARKERS) + 1}, "n_channels"),
        ({"dtype": "int16"}, "dtype"),
        ({"he_tissues": [9]}, "he_tissues"),
        ({"image_size": (10,)}, "image_size"),
        ({"resolutions": ()}, "resolutions"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_synthetic_cohort(tmp_path, **{"n_tissues": 2, "image_size": 32, "n_cells": 5, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_runs_on_a_dask_client_with_the_same_result(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    kwargs = {**SMALL, "n_tissues": 3, "standardization": False, "tiling": False, "seed": 5}
    loop = make_synthetic_cohort(tmp_path / "loop", **kwargs)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client, get_task_stream(client) as tasks:
            dask = make_synthetic_cohort(tmp_path / "dask", **kwargs)
    assert sum(t["key"].startswith("_render_tissue") for t in tasks.data) == 3
    assert _files(loop, "*.parquet") == _files(dask, "*.parquet")
    assert _zarr_files(loop) == _zarr_files(dask)


def test_downsample_and_label_means() -> None:
    image = np.arange(2 * 5 * 4, dtype=np.uint16).reshape(2, 5, 4)
    half = _downsample(image, 2.0)
    assert half.shape == (2, 3, 2) and half.dtype == np.uint16
    assert half[0, 0, 0] == round(image[0, :2, :2].mean()) and half[1, 2, 1] == round(image[1, 4, 2:].mean())
    mask = np.zeros((5, 4), bool)
    mask[:3, :3] = True
    # blocks with half of their pixels in the mask are in it
    assert _downsample(mask, 2.0).tolist() == [[True, True], [True, False], [False, False]]
    assert _downsample(image, 1.0) is image
    labels = np.array([[0, 1, 1, 2], [2, 2, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=np.uint32)
    means = _label_means(labels, image)
    for label in (1, 2, 3):
        np.testing.assert_array_equal(means[:, label - 1], image[:, labels == label].mean(axis=1))
