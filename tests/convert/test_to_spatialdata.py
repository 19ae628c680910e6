"""Cohort -> SpatialData: elements, tables, attrs, and the tools users reach for (spatialdata, squidpy, plots)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spatialdata
import zarr.storage
from spatialdata.models import Image2DModel, Labels2DModel, TableModel, get_model
from spatialdata.transformations import Scale, get_transformation
from xarray import DataTree

import spora_sd
from spora_sd.convert import element_names
from spora_sd.convert.attrs import ATTRS_KEY
from spora_sd.convert.store import write_spatialdata
from spora_sd.convert.to_spatialdata import _coordinates, _template, convert, to_spatialdata
from spora_sd.errors import CohortFormatError, CohortNotFoundError
from spora_sd.io.cohort import open_cohort
from spora_sd.io.masks import read_mask
from spora_sd.testing import assert_sdata_equal

DATASET = "sdtest2025cohort"


@pytest.fixture(scope="session")
def cohort_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 tissues (one lacks a channel, one has no H&E), images larger than one 256 chunk, 2 pyramid levels."""
    root = tmp_path_factory.mktemp("sdcohorts")
    return spora_sd.make_synthetic_cohort(
        root,
        name=DATASET,
        n_tissues=3,
        image_size=(300, 340),
        n_cells=50,
        n_channels=8,
        n_levels=2,
        seed=3,
        standardization=False,
        tiling=False,
    )


@pytest.fixture(scope="session")
def sdata(cohort_path: Path) -> spatialdata.SpatialData:
    return to_spatialdata(cohort_path, tissue_metadata="both")


@pytest.fixture(scope="session")
def cohort(cohort_path: Path):
    return open_cohort(cohort_path)


def _scale0(element):
    return element["scale0"]["image"] if isinstance(element, DataTree) else element


# --------------------------------------------------------------------------------------------------
# elements


def test_one_coordinate_system_per_tissue_in_micrometers(sdata, cohort) -> None:
    tissue_ids = sorted(cohort.tissue_ids())
    assert sorted(sdata.coordinate_systems) == tissue_ids
    for _, name, element in sdata.gen_spatial_elements():
        parsed = element_names.parse_element_name(name)
        transforms = get_transformation(element, get_all=True)
        assert list(transforms) == [parsed.tissue_id]
        assert transforms[parsed.tissue_id] == Scale([1.0, 1.0], axes=("y", "x"))


def test_element_names_and_reverse_map(sdata, cohort) -> None:
    elements = sdata.attrs[ATTRS_KEY]["elements"]
    names = {name for _, name, _ in sdata.gen_spatial_elements()}
    assert names == set(elements)
    for tid in cohort.tissue_ids():
        assert element_names.labels_name(tid, "cells") in names and element_names.labels_name(tid, "tissue") in names
        assert element_names.labels_name(tid, "cell_types") in names
    for tid in cohort.tissue_ids("imc"):
        entry = elements[element_names.image_name(tid, "imc")]
        assert entry == {
            "kind": "image",
            "file": f"imc/1_0mpp/images/{tid}.ome.zarr",
            "tissue_id": tid,
            "modality": "imc",
            "mpp": 1.0,
        }
        assert (cohort.path / entry["file"]).is_dir()
    he = set(cohort.tissue_ids("he"))
    assert {n.split("__")[0] for n in names if n.endswith("__he")} == he
    assert len(he) < len(cohort.tissue_ids())  # a tissue without H&E gets no he image
    semantic = elements[element_names.labels_name(cohort.tissue_ids()[0], "cell_types")]
    assert semantic["kind"] == "semantic" and semantic["task"] == "cell_types"


def test_images_are_lazy_multiscale_with_tissue_channels(sdata, cohort) -> None:
    for tid in cohort.tissue_ids("imc"):
        element = sdata.images[element_names.image_name(tid, "imc")]
        assert isinstance(element, DataTree) and list(element.keys()) == ["scale0", "scale1"]
        level0 = _scale0(element)
        assert level0.dims == ("c", "y", "x")
        assert list(level0.coords["c"].values) == cohort.tissue_channels(tid, "imc")
        assert type(level0.data).__name__ == "Array"  # dask, never loaded
        stored = cohort.image(tid, "imc")
        # dask chunks group whole 256 x 256 Zarr chunks (here the whole image is one chunk)
        assert all(size % 256 == 0 for size in level0.data.chunksize[1:]) or level0.data.numblocks == (1, 1, 1)
        np.testing.assert_array_equal(level0.data[:, 250:290, 10:40].compute(), stored[:, 250:290, 10:40].compute())
        assert element["scale1"]["image"].shape[1] == stored.shape[1] // 2
    ragged = [t for t in cohort.tissue_ids("imc") if len(cohort.tissue_channels(t, "imc")) < len(cohort.panel("imc"))]
    assert ragged, "the synthetic cohort has a tissue that lacks a channel"


def test_coordinates_are_not_kept_by_the_process(cohort_path: Path) -> None:
    """The coordinates shared by a conversion's elements are not cached beyond it (they would pin memory)."""
    sdata = to_spatialdata(cohort_path)
    assert _coordinates.cache_info().currsize == 0 and _template.cache_info().currsize == 0
    tid = open_cohort(cohort_path).tissue_ids("imc")[0]
    image = _scale0(sdata.images[element_names.image_name(tid, "imc")])
    cells = sdata.labels[element_names.labels_name(tid, element_names.CELLS_LABELS)]
    for level in (image, _scale0(cells) if isinstance(cells, DataTree) else cells):
        np.testing.assert_array_equal(level.coords["y"].values, np.arange(level.shape[-2]) + 0.5)  # pixel centres
        np.testing.assert_array_equal(level.coords["x"].values, np.arange(level.shape[-1]) + 0.5)


def test_labels_match_the_masks_and_keep_category_names(sdata, cohort) -> None:
    tid = cohort.tissue_ids()[1]
    cells = sdata.labels[element_names.labels_name(tid, "cells")]
    np.testing.assert_array_equal(cells.data.compute(), cohort.instance_mask(tid))
    tissue = sdata.labels[element_names.labels_name(tid, "tissue")]
    np.testing.assert_array_equal(tissue.data.compute(), cohort.tissue_mask(tid))
    semantic = sdata.labels[element_names.labels_name(tid, "cell_types")]
    encoder = cohort.label_encoder("cell_types")
    assert semantic.attrs[ATTRS_KEY] == {"task": "cell_types", "categories": encoder}
    assert sdata.attrs[ATTRS_KEY]["label_encoders"] == {"cell_types": encoder}
    assert set(np.unique(semantic.data.compute())) <= {0, *encoder.values()}


def test_registered_modalities_overlay(sdata, cohort) -> None:
    for tid in cohort.tissue_ids("he"):
        extents = [
            spatialdata.get_extent(sdata[name], coordinate_system=tid)
            for name in (
                element_names.image_name(tid, "he"),
                element_names.image_name(tid, "imc"),
                element_names.labels_name(tid, "cells"),
            )
        ]
        assert extents[0] == extents[1] == extents[2]


def test_passes_spatialdata_validation(sdata) -> None:
    for kind, _name, element in sdata.gen_elements():
        model = get_model(element)  # validates the element
        if kind == "images":
            assert model is Image2DModel
        elif kind == "labels":
            assert model is Labels2DModel
        else:
            assert model is TableModel
        model.validate(element)
    table = sdata.tables[element_names.CELL_TABLE]
    sdata.validate_table_in_spatialdata(table)
    # what TableModel.parse would check on top of validate: unique instance ids per region
    assert not table.obs.duplicated([element_names.REGION_KEY, element_names.INSTANCE_KEY]).any()


def test_each_element_structure_is_validated_by_spatialdata(sdata) -> None:
    """Elements of one structure are checked once; a new structure still goes through spatialdata's model."""
    from xarray import DataArray

    from spora_sd.convert.to_spatialdata import _add_rasters

    target = spatialdata.SpatialData()
    name, labels = next(iter(sdata.labels.items()))
    _add_rasters(target.labels, {name: labels, "copy": labels})  # same structure: spatialdata's name checks only
    assert list(target.labels) == [name, "copy"]
    with pytest.raises(KeyError):  # spatialdata's name rules still apply
        _add_rasters(target.labels, {"COPY": labels})
    swapped = DataArray(labels.data.T, dims=("x", "y"), attrs=labels.attrs)
    with pytest.raises(ValueError, match="dimension"):  # a new structure: the model's validation
        _add_rasters(target.labels, {"swapped": swapped})


def test_transformations_are_spatialdatas_own(sdata) -> None:
    """Each level carries what ``set_transformation(..., set_all=True)`` would set, including the level scales."""
    from spatialdata.transformations import set_transformation

    for container in (sdata.images, sdata.labels):
        name, element = next(iter(container.items()))
        tissue_id = element_names.parse_element_name(name).tissue_id
        keys = list(element.children) if isinstance(element, DataTree) else [None]
        assert len(keys) == (2 if container is sdata.images else 1)
        ours = [repr((element[k]["image"] if k else element).attrs["transform"]) for k in keys]
        again = element.copy(deep=False)
        set_transformation(again, {tissue_id: Scale([1.0, 1.0], axes=("y", "x"))}, set_all=True)
        assert ours == [repr((again[k]["image"] if k else again).attrs["transform"]) for k in keys]


# --------------------------------------------------------------------------------------------------
# tables


def test_cell_table(sdata, cohort) -> None:
    table = sdata.tables[element_names.CELL_TABLE]
    cells = cohort.cells()  # grouped by tissue, increasing cell_id: rows keep this order
    assert table.n_obs == len(cells)
    in_file_order = list(dict.fromkeys(cells["tissue_id"].astype(str)))
    assert table.uns["spatialdata_attrs"] == {
        "region": [element_names.labels_name(t, "cells") for t in in_file_order],
        "region_key": "region",
        "instance_key": "cell_id",
    }
    obs = table.obs
    assert list(obs["tissue_id"].astype(str)) == list(cells["tissue_id"].astype(str))
    np.testing.assert_array_equal(obs["cell_id"].to_numpy(), cells["cell_id"].to_numpy())
    assert (obs["region"].astype(str) == obs["tissue_id"].astype(str) + "__cells").all()
    for column in ("region", "tissue_id", "cell_type", "cell_category", "subtype"):
        assert isinstance(obs[column].dtype, pd.CategoricalDtype), column
    assert list(obs["cell_type"].astype(str)) == list(cells["cell_type"].astype(str))
    assert table.obs_names[0] == f"{cells['tissue_id'].iloc[0]}__{cells['cell_id'].iloc[0]}"
    # var = channels.parquet
    channels = cohort.channels("imc")
    assert list(table.var_names) == list(channels["channel_name"])
    assert list(table.var["qc_pass"]) == list(channels["qc_pass"])
    assert (table.var["modality"] == "imc").all()
    # X = intensities, float32, NaN exactly where the tissue lacks the channel
    assert table.X.dtype == np.float32
    np.testing.assert_array_equal(table.X, cells[list(channels["channel_name"])].to_numpy(np.float32))
    cpt = cohort.channels_per_tissue("imc")
    lacking = ~cpt.loc[obs["tissue_id"].astype(str), list(channels["channel_name"])].to_numpy(bool)
    assert lacking.any()
    np.testing.assert_array_equal(np.isnan(table.X), lacking)
    # rows ordered by region then cell_id
    codes = obs["region"].cat.codes.to_numpy()
    assert np.all(np.diff(codes) >= 0)
    assert all(np.all(np.diff(g) > 0) for _, g in obs.groupby("region", observed=True)["cell_id"])


def test_unordered_cells_table_is_sorted(cohort_path: Path, tmp_path: Path, cohort) -> None:
    copy = tmp_path / DATASET
    shutil.copytree(cohort_path, copy)
    cells = pq.read_table(copy / "metadata" / "cells.parquet")
    shuffled = cells.take(np.random.default_rng(0).permutation(cells.num_rows))
    pq.write_table(shuffled, copy / "metadata" / "cells.parquet")
    table = to_spatialdata(copy, elements=("tables",)).tables["cells"]
    expected = cohort.cells().sort_values(["tissue_id", "cell_id"])
    assert list(table.obs["tissue_id"].cat.categories) == sorted(cohort.tissue_ids())
    np.testing.assert_array_equal(table.obs["cell_id"].to_numpy(), expected["cell_id"].to_numpy())
    np.testing.assert_array_equal(table.X, expected[cohort.panel("imc")].to_numpy(np.float32))
    assert list(table.obs["cell_type"].astype(str)) == list(expected["cell_type"].astype(str))
    duplicated = pa.concat_tables([cells, cells.slice(0, 1)])
    pq.write_table(duplicated, copy / "metadata" / "cells.parquet")
    with pytest.raises(CohortFormatError, match=r"table\.key\.duplicate"):
        to_spatialdata(copy, elements=("tables",))


def test_centroids_are_micrometers_in_xy_order(sdata, cohort) -> None:
    table = sdata.tables[element_names.CELL_TABLE]
    tid = cohort.tissue_ids()[0]
    mask = cohort.instance_mask(tid)
    rows = np.flatnonzero(table.obs["tissue_id"] == tid)
    for row in rows[:10]:
        cell = table.obs["cell_id"].iloc[row]
        ys, xs = np.nonzero(mask == cell)
        # pixel (i, j) covers [i, i+1) x [j, j+1) µm at 1 mpp: its centre is at (j + 0.5, i + 0.5)
        np.testing.assert_allclose(table.obsm["spatial"][row], [xs.mean() + 0.5, ys.mean() + 0.5])


def test_tissue_metadata_table_and_join(sdata, cohort) -> None:
    tissues = sdata.tables[element_names.TISSUE_TABLE]
    assert tissues.n_obs == len(cohort.tissues)
    assert list(tissues.obs["tissue_id"].astype(str)) == list(cohort.tissues["tissue_id"])
    assert set(cohort.tissues.columns) == set(tissues.obs.columns)
    obs = sdata.tables[element_names.CELL_TABLE].obs
    # tissue-level columns joined, per-modality ones (modality) left out
    assert "subtype" in obs and "grade" in obs and "modality" not in obs
    first = obs.iloc[0]
    row = cohort.tissues.set_index("tissue_id").loc[first["tissue_id"]]
    row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
    assert first["subtype"] == row["subtype"] and first["grade"] == row["grade"]


@pytest.mark.parametrize(
    ("option", "tables", "joined"),
    [("table", {"cells", "tissues"}, False), ("obs", {"cells"}, True), (None, {"cells"}, False)],
)
def test_tissue_metadata_options(cohort, option, tables, joined) -> None:
    sd = to_spatialdata(cohort, elements=("tables",), tissue_metadata=option)
    assert set(sd.tables) == tables
    assert ("subtype" in sd.tables["cells"].obs) is joined
    assert sd.attrs["spora"]["tissues"]["tissue_metadata"] == option


def test_tissue_without_cells(cohort_path: Path, tmp_path: Path, cohort) -> None:
    copy = tmp_path / DATASET
    shutil.copytree(cohort_path, copy)
    empty = cohort.tissue_ids()[1]
    cells = pq.read_table(copy / "metadata" / "cells.parquet").to_pandas()
    kept = pa.Table.from_pandas(cells[cells["tissue_id"] != empty], preserve_index=False)
    pq.write_table(kept, copy / "metadata" / "cells.parquet")
    sd = to_spatialdata(copy, elements=("labels", "tables"))
    table = sd.tables["cells"]
    assert element_names.labels_name(empty, "cells") in sd.labels  # the labels are still there
    assert empty not in table.obs["tissue_id"].cat.categories
    assert element_names.labels_name(empty, "cells") not in table.uns["spatialdata_attrs"]["region"]
    assert list(table.obs["region"].cat.categories) == table.uns["spatialdata_attrs"]["region"]


def test_intensities_are_computed_when_the_cells_table_lacks_them(cohort_path: Path, tmp_path: Path, cohort) -> None:
    copy = tmp_path / DATASET
    shutil.copytree(cohort_path, copy)
    cells = pq.read_table(copy / "metadata" / "cells.parquet", columns=["tissue_id", "cell_id", "cell_type"])
    pq.write_table(cells, copy / "metadata" / "cells.parquet")
    table = to_spatialdata(copy, elements=("tables",)).tables["cells"]
    reference = cohort.cells().sort_values(["tissue_id", "cell_id"])[cohort.panel("imc")].to_numpy(np.float32)
    # cells.parquet holds float32 means measured on the same pixels
    np.testing.assert_allclose(table.X, reference, rtol=1e-6, equal_nan=True)
    assert np.array_equal(np.isnan(table.X), np.isnan(reference))


# --------------------------------------------------------------------------------------------------
# attrs, registry, selections, errors


def test_attrs_are_json_and_describe_the_cohort(sdata, cohort) -> None:
    attrs = sdata.attrs
    assert json.loads(json.dumps(attrs, allow_nan=False)) == attrs
    assert attrs["dataset"] == DATASET and attrs["modalities"] == ["he", "imc"]
    assert "bio" not in attrs and "tech" not in attrs  # not in the registry, none given
    spora = attrs["spora"]
    assert spora["spora_sd_version"] == spora_sd.__version__
    assert spora["resolutions"] == {"he": 1.0, "imc": 1.0} and spora["mask_resolution"] == 1.0
    assert spora["channels"]["imc"]["columns"] == list(cohort.channels("imc").columns)
    assert len(spora["channels"]["imc"]["records"]) == len(cohort.panel("imc"))
    assert spora["channels_per_tissue"]["imc"] == {
        t: cohort.tissue_channels(t, "imc") for t in cohort.tissue_ids("imc")
    }
    assert spora["tissues"]["columns"] == list(cohort.tissues.columns)
    assert spora["cells"]["columns"] == cohort.cell_columns
    assert spora["cells"]["intensities"] == {"imc": "table"}


def test_bio_and_tech_from_arguments(cohort) -> None:
    bio = {"tissue": "breast", "tissue_ontology_id": "UBERON:0000310"}
    sd = to_spatialdata(cohort, elements=("tables",), bio=bio, tech={"assay": "imaging mass cytometry"})
    assert sd.attrs["bio"] == bio and sd.attrs["tech"] == {"assay": "imaging mass cytometry"}


def test_registered_cohort_by_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spora_sd.make_synthetic_cohort(
        tmp_path, name="jackson2020single", n_tissues=1, image_size=64, n_cells=8, standardization=False, tiling=False
    )
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path))
    sd = spora_sd.to_spatialdata("jackson2020")
    attrs = sd.attrs
    assert attrs["dataset"] == "jackson2020single" and attrs["doi"] == "10.1038/s41586-019-1876-x"
    assert attrs["bio"] == {
        "tissue": "breast",
        "tissue_ontology_id": "UBERON:0000310",
        "disease": "breast cancer",
        "disease_ontology_id": "MONDO:0007254",
        "organism": "human",
        "organism_ontology_id": "NCBITaxon:9606",
    }
    assert attrs["tech"] == {"assay": "imaging mass cytometry", "assay_ontology_id": "OBI:0003096"}
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(CohortNotFoundError, match=r"rclone copy spora:spora/jackson2020single"):
        spora_sd.to_spatialdata("jackson2020")


def test_selections(cohort) -> None:
    tid = cohort.tissue_ids("he")[0]
    sd = to_spatialdata(cohort, tissues=[tid], modalities=["imc"], resolution=1.0)
    assert sd.coordinate_systems == [tid]
    assert list(sd.images) == [element_names.image_name(tid, "imc")]
    assert set(sd.tables["cells"].obs["tissue_id"]) == {tid}
    assert set(sd.tables["tissues"].obs["modality"]) == {"imc"}
    only_images = to_spatialdata(cohort, elements=("images",), modalities=["he"])
    assert not only_images.labels and not only_images.tables
    assert all(n.endswith("__he") for n in only_images.images)


def test_bad_arguments(cohort) -> None:
    with pytest.raises(ValueError, match="no row for tissue"):
        to_spatialdata(cohort, tissues=[f"{DATASET}_zzzzzzzz_0000"])
    with pytest.raises(CohortNotFoundError, match=r"no (he|imc) images at 2.0 mpp"):
        to_spatialdata(cohort, resolution=2.0)
    with pytest.raises(CohortNotFoundError, match="'codex' is not on disk"):
        to_spatialdata(cohort, modalities=["codex"])
    with pytest.raises(ValueError, match="unknown element kind"):
        to_spatialdata(cohort, elements=("points",))
    with pytest.raises(ValueError, match="tissue_metadata"):
        to_spatialdata(cohort, tissue_metadata="nowhere")  # type: ignore[arg-type]


def test_partial_copy_converts_what_is_there(cohort_path: Path, tmp_path: Path, caplog) -> None:
    copy = tmp_path / DATASET
    shutil.copytree(cohort_path, copy, ignore=shutil.ignore_patterns("he"))
    sd = to_spatialdata(copy)
    assert sd.images and not any(n.endswith("__he") for n in sd.images)
    assert "not on disk" in caplog.text


def test_channel_count_mismatch_names_the_file(cohort_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / DATASET
    shutil.copytree(cohort_path, copy)
    cpt_file = copy / "imc" / "channels_per_tissue.parquet"
    cpt = pd.read_parquet(cpt_file)
    cpt.iloc[0, 0] = not cpt.iloc[0, 0]
    cpt.to_parquet(cpt_file)
    with pytest.raises(CohortFormatError, match=r"image\.channels"):
        to_spatialdata(copy, elements=("images",))


# --------------------------------------------------------------------------------------------------
# the tools users reach for


def test_write_then_read_zarr_gives_equal_elements(sdata, tmp_path: Path) -> None:
    path = tmp_path / "c.zarr"
    sdata.write(path)
    try:
        back = spatialdata.read_zarr(path)
        assert_sdata_equal(sdata, back)
    finally:
        sdata.path = None  # the session object stays unbacked for the other tests


def test_write_spatialdata_is_atomic_and_equal(cohort, tmp_path: Path) -> None:
    small = to_spatialdata(cohort, tissues=cohort.tissue_ids("he")[:1])
    path = tmp_path / "w.zarr"
    assert write_spatialdata(small, path, progress=True) == path
    assert small.path == path
    assert_sdata_equal(small, spatialdata.read_zarr(path))
    assert [p.name for p in tmp_path.iterdir()] == ["w.zarr"]  # no temporary left behind
    with pytest.raises(FileExistsError):
        write_spatialdata(small, path)


def test_bounding_box_query_in_micrometers(sdata, cohort) -> None:
    tid = cohort.tissue_ids("imc")[0]
    # filter_table=False: spatialdata's table filter fails on a table that annotates no element, as
    # the tissues table (scverse/spatialdata#1248); see the next test for the filtered cell table
    crop = spatialdata.bounding_box_query(
        sdata,
        axes=("x", "y"),
        min_coordinate=[20, 100],
        max_coordinate=[70, 130],
        target_coordinate_system=tid,
        filter_table=False,
    )
    image = _scale0(crop.images[element_names.image_name(tid, "imc")])
    expected = cohort.image(tid, "imc")[:, 100:130, 20:70].compute()
    np.testing.assert_array_equal(image.data.compute(), expected)
    labels = crop.labels[element_names.labels_name(tid, "cells")]
    np.testing.assert_array_equal(labels.data.compute(), cohort.instance_mask(tid)[100:130, 20:70])
    assert set(crop.coordinate_systems) == {tid}


def test_bounding_box_query_filters_the_cell_table(cohort) -> None:
    tid = cohort.tissue_ids("imc")[0]
    sd = to_spatialdata(cohort, tissue_metadata="obs")
    crop = sd.query.bounding_box(
        axes=("x", "y"), min_coordinate=[0, 0], max_coordinate=[120, 90], target_coordinate_system=tid
    )
    kept = crop.tables[element_names.CELL_TABLE]
    in_crop = set(np.unique(cohort.instance_mask(tid)[:90, :120])) - {0}
    assert set(kept.obs["cell_id"]) == in_crop
    assert set(kept.obs["tissue_id"]) == {tid}


def test_squidpy_per_tissue_without_edges_between_tissues(sdata) -> None:
    import squidpy as sq

    table = sdata.tables[element_names.CELL_TABLE].copy()
    sq.gr.spatial_neighbors(table, library_key="tissue_id", coord_type="generic", delaunay=True)
    graph = table.obsp["spatial_connectivities"].tocoo()
    assert graph.nnz > 0
    tissue = table.obs["tissue_id"].cat.codes.to_numpy()
    assert np.array_equal(tissue[graph.row], tissue[graph.col])
    sq.gr.nhood_enrichment(table, cluster_key="cell_type", seed=0, n_perms=20, show_progress_bar=False)
    zscore = table.uns["cell_type_nhood_enrichment"]["zscore"]
    n_types = len(table.obs["cell_type"].cat.categories)
    assert zscore.shape == (n_types, n_types)
    # co_occurrence has no library_key: run it per tissue, as distances between tissues mean nothing
    for tid in table.obs["tissue_id"].cat.categories:
        sub = table[table.obs["tissue_id"] == tid].copy()
        sub.obs["cell_type"] = sub.obs["cell_type"].cat.remove_unused_categories()
        probabilities, intervals = sq.gr.co_occurrence(sub, cluster_key="cell_type", interval=10, copy=True)
        k = len(sub.obs["cell_type"].cat.categories)
        assert probabilities.shape == (k, k, len(intervals) - 1)
        assert np.isfinite(probabilities).all()


def test_spatialdata_plot_renders_image_and_labels(sdata, cohort, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image
    import matplotlib.pyplot as plt
    import spatialdata_plot  # noqa: F401

    tid = cohort.tissue_ids("imc")[0]
    channel = cohort.tissue_channels(tid, "imc")[0]
    fig, ax = plt.subplots(figsize=(4, 4))
    (
        sdata.pl.render_images(element_names.image_name(tid, "imc"), channel=channel, cmap="gray")
        .pl.render_labels(element_names.labels_name(tid, "cells"), outline_alpha=1.0, fill_alpha=0.0)
        .pl.show(coordinate_systems=tid, ax=ax)
    )
    png = tmp_path / "tissue.png"
    fig.savefig(png, dpi=60)
    plt.close(fig)
    pixels = matplotlib.image.imread(png)
    assert png.stat().st_size > 5_000
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # not a blank canvas


# --------------------------------------------------------------------------------------------------
# laziness: count what the Zarr stores read


class _StoreReads:
    """Record every key that a zarr LocalStore reads (whole or in part)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[tuple[str, str]] = []
        store = zarr.storage.LocalStore
        for method in ("get", "get_partial_values"):
            original = getattr(store, method)
            monkeypatch.setattr(store, method, self._async(original, method))
        monkeypatch.setattr(store, "get_sync", self._sync(store.get_sync))

    def _record(self, store, key) -> None:
        self.keys.append((str(store.root), key))

    def _async(self, original, method):
        async def wrapper(store, *args, **kwargs):
            if method == "get":
                self._record(store, args[0] if args else kwargs["key"])
            else:
                for key, _ in args[1] if len(args) > 1 else kwargs["key_ranges"]:
                    self._record(store, key)
            return await original(store, *args, **kwargs)

        return wrapper

    def _sync(self, original):
        def wrapper(store, *args, **kwargs):
            self._record(store, args[0] if args else kwargs["key"])
            return original(store, *args, **kwargs)

        return wrapper

    def chunks(self) -> list[tuple[str, str]]:
        return [(root, key) for root, key in self.keys if re.match(r"^c/", key)]


def test_opening_reads_no_pixel_chunk(cohort_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _StoreReads(monkeypatch)
    sd = to_spatialdata(cohort_path)
    assert reads.chunks() == []  # the wrapper sees reads: the crop below is one
    cohort = open_cohort(cohort_path)
    tid = cohort.tissue_ids("imc")[0]
    image = _scale0(sd.images[element_names.image_name(tid, "imc")])
    # a crop inside the second column of 256 x 256 chunks of level 0 touches that chunk's shard only
    crop = image.data[:, 10:60, 270:300].compute()
    assert crop.shape[1:] == (50, 30)
    level0 = str(cohort.image_path(tid, "imc") / "0")
    assert {(Path(root).as_posix(), key) for root, key in reads.chunks()} == {(Path(level0).as_posix(), "c/0/0/1")}


# --------------------------------------------------------------------------------------------------
# convert: the CLI's function


def test_convert_and_cli(cohort_path: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spora_sd.cli.app import app

    tid = open_cohort(cohort_path).tissue_ids()[0]
    out = tmp_path / "b.zarr"
    result = CliRunner().invoke(
        app, ["convert", str(cohort_path), str(out), "--modalities", "imc", "--tissues", tid, "--resolution", "1.0"]
    )
    assert result.exit_code == 0, result.output
    back = spatialdata.read_zarr(out)
    assert list(back.images) == [element_names.image_name(tid, "imc")] and back.coordinate_systems == [tid]
    assert back.attrs["spora"]["modalities"] == ["imc"]
    again = CliRunner().invoke(app, ["convert", str(cohort_path), str(out)])
    assert again.exit_code == 1 and "exists" in again.output and "Traceback" not in again.output
    with pytest.raises(FileExistsError):
        convert(cohort_path, out)


def test_mask_reads_are_deferred(sdata, cohort, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    import spora_sd.convert.to_spatialdata as module

    monkeypatch.setattr(module, "read_mask", lambda path: calls.append(path) or read_mask(path))
    sd = to_spatialdata(cohort, elements=("labels",))
    assert calls == []
    tid = cohort.tissue_ids()[0]
    sd.labels[element_names.labels_name(tid, "tissue")].data.compute()
    assert len(calls) == 1 and calls[0].endswith(f"{tid}.npz")


def test_dask_chunks_group_whole_zarr_chunks(tmp_path: Path) -> None:
    from spora_sd.io.images import open_image_levels, write_image

    path = write_image(tmp_path / "x_abcdefgh_0000.ome.zarr", np.zeros((2, 1100, 600), "uint16"), mpp=1.0,
                       channel_names=["A", "B"])  # fmt: skip
    assert open_image_levels(path)[0].chunksize == (2, 256, 256)
    grouped = open_image_levels(path, chunk_bytes=4 * 2 * 256 * 256 * 2)[0]  # room for 2 x 2 Zarr chunks
    assert grouped.chunksize == (2, 512, 512)


def test_tables_are_checked_against_the_labels(cohort_path: Path, tmp_path: Path, cohort) -> None:
    """The cell table's regions are checked once per region (not by a scan of every element per region)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        only_table = to_spatialdata(cohort, elements=("tables",))  # asked for: no warning
    assert not [w for w in caught if "is annotating" in str(w.message)]
    assert set(only_table.tables) == {"cells", "tissues"} and not only_table.labels
    copy = tmp_path / DATASET
    shutil.copytree(cohort_path, copy)
    gone = cohort.tissue_ids()[0]
    next(copy.glob(f"segmentations/*/cell_masks/instances/{gone}.npz")).unlink()
    with pytest.warns(UserWarning, match=f"annotating '{element_names.labels_name(gone, 'cells')}'"):
        sd = to_spatialdata(copy, elements=("labels", "tables"))
    assert element_names.labels_name(gone, "cells") not in sd.labels
    assert element_names.labels_name(gone, "cells") in sd.tables["cells"].uns["spatialdata_attrs"]["region"]


def test_missing_labels_warning_names_the_callers_line(cohort_path: Path, tmp_path: Path) -> None:
    """The warning points at the code that called to_spatialdata (not at spora-sd's own frames)."""
    from spora_sd.layout import CohortPaths

    copy = Path(shutil.copytree(cohort_path, tmp_path / DATASET))
    tissue = open_cohort(copy).tissue_ids()[1]
    CohortPaths(copy).instance_mask(1.0, tissue).unlink()
    with pytest.warns(UserWarning, match=rf"annotating '{tissue}__cells', which is not present") as caught:
        to_spatialdata(copy)
    assert {Path(w.filename).name for w in caught if "annotating" in str(w.message)} == {Path(__file__).name}
