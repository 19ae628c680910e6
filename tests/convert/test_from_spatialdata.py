"""from_spatialdata on SpatialData objects made elsewhere: inference, errors, atomicity, dask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel, Labels2DModel, TableModel
from spatialdata.transformations import Identity, Scale, set_transformation

import spora_sd
from spora_sd.convert.from_spatialdata import from_spatialdata
from spora_sd.convert.plan import ExportInputError
from spora_sd.io.images import open_image_levels, read_image_metadata
from spora_sd.io.masks import read_mask


def _image(channels: list, hw: tuple[int, int], cs: str, *, scale: float | None = 0.5, seed: int = 0, dtype="uint16"):
    data = np.random.default_rng(seed).integers(0, 1000, (len(channels), *hw)).astype(dtype)
    transform = Scale([scale, scale], axes=("y", "x")) if scale is not None else Identity()
    return Image2DModel.parse(data, dims=("c", "y", "x"), c_coords=channels, transformations={cs: transform})


def _labels(hw: tuple[int, int], n_cells: int, cs: str, *, scale: float | None = 0.5):
    mask = np.zeros(hw, dtype="uint32")
    for i in range(n_cells):  # vertical stripes, one per cell
        mask[:, 2 * i : 2 * i + 1] = i + 1
    transform = Scale([scale, scale], axes=("y", "x")) if scale is not None else Identity()
    return Labels2DModel.parse(mask, dims=("y", "x"), transformations={cs: transform})


def _table(cells: dict[str, int], var_names: list[str], obs_extra: dict | None = None, seed: int = 0) -> ad.AnnData:
    regions = [r for r, n in cells.items() for _ in range(n)]
    ids = [i + 1 for n in cells.values() for i in range(n)]
    obs = pd.DataFrame({"region": pd.Categorical(regions), "cell_id": ids, **(obs_extra or {})})
    obs.index = obs.index.astype(str)
    x = np.random.default_rng(seed).random((len(ids), len(var_names))).astype("float32")
    table = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=var_names))
    return TableModel.parse(table, region=list(cells), region_key="region", instance_key="cell_id")


def _sdata(*, scale: float | None = 0.5, c_coords: tuple[list, list] | None = None, obs_extra=None) -> sd.SpatialData:
    """Two tissues (own coordinate systems), labels annotated by one table, like spatialdata-io's steinbock."""
    panels = c_coords or (["CD3E", "DNA1"], ["DNA1", "CD8A", "CD3E"])
    hw = {"s1": (40, 50), "s2": (30, 70)}
    images = {
        f"{s}_image": _image(p, hw[s], s, scale=scale, seed=i) for i, (s, p) in enumerate(zip(hw, panels, strict=True))
    }
    labels = {f"{s}_labels": _labels(hw[s], 6 + i, s, scale=scale) for i, s in enumerate(hw)}
    var = ["CD3E", "DNA1", "CD8A"]
    table = _table({"s1_labels": 6, "s2_labels": 7}, var, obs_extra)
    return sd.SpatialData(images=images, labels=labels, tables={"table": table})


def _errors(report: spora_sd.ValidationReport) -> list:
    return [p for p in report.problems if p.severity == "error"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[sd.SpatialData, Path]:
    sdata = _sdata()
    return sdata, from_spatialdata(sdata, tmp_path_factory.mktemp("x") / "infer2025test")


def test_inferred_export_is_valid(exported) -> None:
    _, root = exported
    assert _errors(spora_sd.validate(root)) == []
    tissues = pd.read_parquet(root / "metadata/tissues.parquet")
    assert set(tissues["source_name"]) == {"s1", "s2"}  # image names without spatialdata-io's "_image"
    assert (tissues["mpp_imc"] == 0.5).all()  # from the Scale transformations: no mpp argument given
    assert tissues["specimen_id"].eq("0000").all() and tissues["patient_id"].nunique() == 2
    # derived products are computed by default
    assert (root / "imc/0_5mpp/standardization/quantile_clipping/uq_0.99").is_dir()
    assert (root / "tiling/0_5mpp/default/256_tile_coordinates.parquet").is_file()


def test_union_panel_and_reordered_channels(exported) -> None:
    sdata, root = exported
    channels = pd.read_parquet(root / "imc/channels.parquet")
    assert channels["channel_name"].tolist() == ["CD3E", "DNA1", "CD8A"]  # first appearance, stable
    assert channels["uniprot_id"].tolist()[0] == "P07766"  # offline lookup of CD3E
    cpt = pd.read_parquet(root / "imc/channels_per_tissue.parquet")
    tissues = pd.read_parquet(root / "metadata/tissues.parquet").set_index("source_name")
    s1, s2 = tissues.loc["s1", "tissue_id"], tissues.loc["s2", "tissue_id"]
    assert cpt.loc[s1].tolist() == [True, True, False] and cpt.loc[s2].all()
    # s2's channels were DNA1, CD8A, CD3E: stored in panel order, pixels moved with their names
    path = root / f"imc/0_5mpp/images/{s2}.ome.zarr"
    assert read_image_metadata(path).channel_names == ["CD3E", "DNA1", "CD8A"]
    stored = np.asarray(open_image_levels(path)[0])
    source = np.asarray(sdata.images["s2_image"].data)
    np.testing.assert_array_equal(stored, source[[2, 0, 1]])
    assert stored.dtype == source.dtype


def test_cells_table_and_masks(exported) -> None:
    sdata, root = exported
    cells = pd.read_parquet(root / "metadata/cells.parquet")
    tissues = pd.read_parquet(root / "metadata/tissues.parquet").set_index("source_name")
    assert len(cells) == 13 and list(cells.columns[:2]) == ["tissue_id", "cell_id"]
    table = sdata.tables["table"]
    for source, labels in (("s1", "s1_labels"), ("s2", "s2_labels")):
        tid = tissues.loc[source, "tissue_id"]
        rows = cells[cells["tissue_id"] == tid].sort_values("cell_id")
        expected = table[table.obs["region"] == labels]
        np.testing.assert_array_equal(rows[["CD3E", "DNA1", "CD8A"]].to_numpy(), expected.X)
        mask = read_mask(root / f"segmentations/0_5mpp/cell_masks/instances/{tid}.npz")
        np.testing.assert_array_equal(mask, np.asarray(sdata.labels[labels].data))
        tissue_mask = read_mask(root / f"segmentations/0_5mpp/tissue_masks/{tid}.npz")
        assert tissue_mask.shape == mask.shape and tissue_mask.all()  # no tissue mask given: whole image


def test_patient_key_groups_tissues(tmp_path: Path) -> None:
    sdata = _sdata(obs_extra={"patient": ["P1"] * 13})
    root = from_spatialdata(
        sdata, tmp_path / "grouped2025x", patient_key="patient", standardization=False, tiling=False
    )
    tissues = pd.read_parquet(root / "metadata/tissues.parquet")
    assert tissues["patient_id"].nunique() == 1
    assert tissues.sort_values("source_name")["specimen_id"].tolist() == ["0000", "0001"]
    assert tissues["patient_id"].iloc[0] == spora_sd.layout.patient_hash("P1", "grouped2025x")
    assert _errors(spora_sd.validate(root)) == []


def test_dataset_argument_names_the_cohort_folder(tmp_path: Path) -> None:
    root = from_spatialdata(_sdata(), tmp_path, dataset="rooted2025x", standardization=False, tiling=False)
    assert root == tmp_path / "rooted2025x"
    assert pd.read_parquet(root / "metadata/tissues.parquet")["tissue_id"].str.startswith("rooted2025x_").all()


# --------------------------------------------------------------------------------------------------
# errors: each names the missing piece and the argument that supplies it; nothing is written


def test_missing_mpp(tmp_path: Path) -> None:
    with pytest.raises(ExportInputError, match=r"microns per pixel unknown.*pass mpp="):
        from_spatialdata(_sdata(scale=None), tmp_path / "nompp2025x")
    assert list(tmp_path.iterdir()) == []
    # given, it is used
    root = from_spatialdata(_sdata(scale=None), tmp_path / "nompp2025x", mpp=0.25, standardization=False, tiling=False)
    assert (root / "imc/0_25mpp/images").is_dir()


def test_missing_dataset_key(tmp_path: Path) -> None:
    with pytest.raises(ExportInputError, match=r"dataset key missing.*'My-Export'.*pass dataset="):
        from_spatialdata(_sdata(), tmp_path / "My-Export")
    with pytest.raises(spora_sd.LayoutNameError, match="dataset key"):
        from_spatialdata(_sdata(), tmp_path, dataset="Bad Key")
    assert list(tmp_path.iterdir()) == []


def test_integer_c_coords_without_table_var(tmp_path: Path) -> None:
    # c_coords 0..C-1 and the table has a different number of variables: names cannot be inferred
    sdata = _sdata(c_coords=([0, 1], [0, 1, 2]))
    with pytest.raises(ExportInputError, match=r"channel names unknown.*0\.\.1.*3 variables.*set_channel_names"):
        from_spatialdata(sdata, tmp_path / "unnamed2025x")
    # without any table either
    del sdata.tables["table"]
    with pytest.raises(ExportInputError, match="no table annotates its labels"):
        from_spatialdata(sdata, tmp_path / "unnamed2025x")
    assert list(tmp_path.iterdir()) == []


def test_integer_c_coords_take_the_table_var_names(tmp_path: Path) -> None:
    sdata = _sdata(c_coords=([0, 1, 2], [0, 1, 2]))
    root = from_spatialdata(sdata, tmp_path / "named2025x", standardization=False, tiling=False)
    assert pd.read_parquet(root / "imc/channels.parquet")["channel_name"].tolist() == ["CD3E", "DNA1", "CD8A"]


def test_existing_target_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "exists2025x"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        from_spatialdata(_sdata(), target)
    assert (target / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1
    # with overwrite the folder is replaced as a whole, and nothing is left beside it
    from_spatialdata(_sdata(), target, overwrite=True, standardization=False, tiling=False)
    assert not (target / "keep.txt").exists() and spora_sd.validate(target).ok
    assert [p.name for p in tmp_path.iterdir()] == ["exists2025x"]


def test_patient_key_not_a_column(tmp_path: Path) -> None:
    with pytest.raises(ExportInputError, match=r"patient_key='donor' is not a column of table 'table'"):
        from_spatialdata(_sdata(), tmp_path / "nokey2025x", patient_key="donor")


def test_cell_ids_must_match_the_mask(tmp_path: Path) -> None:
    sdata = _sdata()
    sdata.tables["table"].obs["cell_id"] = sdata.tables["table"].obs["cell_id"] + 100
    with pytest.raises(ExportInputError, match=r"labels 's1_labels': 6 mask labels have no row in the cell table"):
        from_spatialdata(sdata, tmp_path / "mismatch2025x")
    assert list(tmp_path.iterdir()) == []  # the half-written export was removed


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """One run names every problem of every element and table, as spatialdata's validation does."""
    images = {
        "s1_image": _image(["CD3E", "CD3E"], (40, 50), "s1"),  # repeated channel names
        "s2_image": _image(["CD3E", "DNA1"], (30, 70), "s2", scale=None),  # no Scale, no mpp argument
    }
    labels = {
        "s1_labels": _labels((40, 50), 6, "s1"),
        "s3_labels": _labels((20, 20), 4, "s3"),  # annotated, but no image of its size
    }
    table = _table({"s1_labels": 6, "s3_labels": 4}, ["CD3E", "DNA1"], obs_extra={"tissue_id": ["x"] * 10})
    sdata = sd.SpatialData(images=images, labels=labels, tables={"table": table})
    with pytest.raises(ExportInputError) as caught:
        from_spatialdata(sdata, tmp_path / "broken2025x")
    error = caught.value
    assert isinstance(error, spora_sd.SporaError) and isinstance(error, ValueError)
    assert len(error.problems) == 4, error.problems
    message = str(error)
    assert message.startswith("4 problems")
    assert "image 's1_image': channel names must be unique, repeated: ['CD3E']" in message
    assert "microns per pixel unknown: image 's2_image'" in message
    assert "labels 's3_labels' (annotated by table 'table') have no image element" in message
    assert "table 'table': obs columns ['tissue_id'] would be overwritten" in message
    assert all(problem in message for problem in error.problems)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_reverse_map_problems_are_reported_at_once(tmp_path: Path) -> None:
    sdata = spora_sd.to_spatialdata(
        spora_sd.make_synthetic_cohort(tmp_path / "src", n_tissues=2, image_size=48, n_cells=5)
    )
    elements = sdata.attrs["spora"]["elements"]
    images = sorted(n for n, e in elements.items() if e["kind"] == "image")
    elements[images[0]]["tissue_id"] = "not a tissue id"
    elements[images[1]]["modality"] = "Not-A-Modality"
    sdata.tables["cells"].obs = sdata.tables["cells"].obs.drop(columns="tissue_id")
    with pytest.raises(ExportInputError) as caught:
        from_spatialdata(sdata, tmp_path / "again2025x")
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert images[0] in problems[0] and images[1] in problems[1]
    assert "table 'cells'" in problems[2] and "tissue_id" in problems[2]


# --------------------------------------------------------------------------------------------------
# other producers: MCMICRO


def _mcmicro_like() -> sd.SpatialData:
    """Built the way spatialdata-io's ``mcmicro`` reader (non-TMA) builds its object."""
    markers = pd.DataFrame(
        {"channel_number": [1, 2, 3, 4], "cycle_number": [1, 1, 2, 2], "marker_name": ["DNA_1", "CD45", "KRT5", "CD8A"]}
    )
    markers.index = markers.marker_name
    rng = np.random.default_rng(3)
    image = Image2DModel.parse(
        rng.integers(0, 60000, (4, 90, 120)).astype("uint16"), c_coords=markers.marker_name.tolist(), rgb=None
    )
    set_transformation(image, transformation={"global": Identity()}, set_all=True)
    cell = np.zeros((90, 120), dtype="int32")
    for i in range(20):
        cell[4 * i : 4 * i + 3, 10:30] = i + 1
    nuclei = np.where(cell > 0, cell, 0)
    labels = {}
    for stem, data in (("cell", cell), ("nuclei", nuclei)):
        labels[f"exemplar-001_{stem}"] = Labels2DModel.parse(data, transformations={"global": Identity()})
    table = pd.DataFrame(rng.random((20, 4)), columns=markers.marker_name.tolist())
    table.insert(0, "CellID", np.arange(1, 21))
    table["X_centroid"], table["Y_centroid"], table["Area"] = rng.random(20), rng.random(20), rng.integers(5, 50, 20)
    var, coords = markers.marker_name.tolist(), ["X_centroid", "Y_centroid"]
    adata = ad.AnnData(
        table[var].to_numpy(),
        obs=table.drop(columns=var + coords),
        var=markers,
        obsm={"spatial": table[coords].to_numpy()},
    )
    adata.obs["region"] = pd.Categorical(["exemplar-001_cell"] * len(adata))
    adata.obs.index = adata.obs.index.astype(str)
    tables = {
        "exemplar-001--unmicst_cell": TableModel.parse(
            adata, region="exemplar-001_cell", region_key="region", instance_key="CellID"
        )
    }
    return sd.SpatialData(images={"exemplar-001_image": image}, labels=labels, tables=tables)


def test_mcmicro_shaped_sdata(tmp_path: Path) -> None:
    sdata = _mcmicro_like()
    with pytest.raises(ExportInputError, match="pass mpp="):
        from_spatialdata(sdata, tmp_path / "mcmicro2025x")
    root = from_spatialdata(sdata, tmp_path / "mcmicro2025x", mpp=0.65, modality="cycif")
    assert _errors(spora_sd.validate(root)) == []
    tissues = pd.read_parquet(root / "metadata/tissues.parquet")
    assert tissues["source_name"].tolist() == ["exemplar-001"] and tissues["modality"].tolist() == ["cycif"]
    assert pd.read_parquet(root / "cycif/channels.parquet")["channel_name"].tolist() == [
        "DNA_1",
        "CD45",
        "KRT5",
        "CD8A",
    ]
    cells = pd.read_parquet(root / "metadata/cells.parquet")
    assert cells["cell_id"].tolist() == list(range(1, 21)) and "Area" in cells.columns and "CellID" not in cells
    np.testing.assert_array_equal(
        cells[["DNA_1", "CD45", "KRT5", "CD8A"]].to_numpy(), sdata.tables["exemplar-001--unmicst_cell"].X
    )
    tid = tissues["tissue_id"].iloc[0]
    image = np.asarray(open_image_levels(root / f"cycif/0_65mpp/images/{tid}.ome.zarr")[0])
    np.testing.assert_array_equal(image, np.asarray(sdata.images["exemplar-001_image"].data))
    # the nuclei labels are annotated by no table: not exported (a warning says so)
    assert sorted(p.name for p in (root / "segmentations/0_65mpp/cell_masks").iterdir()) == ["instances"]


# --------------------------------------------------------------------------------------------------
# dask.distributed and interrupted exports


def test_export_on_a_dask_client_gives_the_same_cohort(exported, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    sdata, sequential = exported
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster):
            root = from_spatialdata(sdata, tmp_path / "infer2025test")
    for path in sorted(sequential.rglob("*")):
        other = root / path.relative_to(sequential)
        assert other.exists(), other
        if path.suffix == ".npz":
            np.testing.assert_array_equal(read_mask(path), read_mask(other))
        elif path.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(other))
        elif path.name.endswith(".ome.zarr"):
            np.testing.assert_array_equal(open_image_levels(path)[0], open_image_levels(other)[0])


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, spatialdata as sd
    from spatialdata.models import Image2DModel, Labels2DModel
    from spatialdata.transformations import Scale
    from spora_sd import from_spatialdata

    rng = np.random.default_rng(0)
    images = {}
    for i in range(5):
        t = {f"s{i}": Scale([1.0, 1.0], axes=("y", "x"))}
        images[f"s{i}_image"] = Image2DModel.parse(
            rng.integers(0, 2**16, (4, 400, 400), dtype="uint16"), dims=("c", "y", "x"),
            c_coords=[f"M{j}" for j in range(4)], transformations=t)
    print("ready", flush=True)
    from_spatialdata(sd.SpatialData(images=images), sys.argv[1])
    """
)


@pytest.mark.parametrize("kill_when", ["first image written", "tables written"])
def test_killed_export_leaves_nothing_that_validates(tmp_path: Path, kill_when: str) -> None:
    script = tmp_path / "export.py"
    script.write_text(_KILL_SCRIPT)
    out = tmp_path / "out"
    target = out / "killed2025x"
    inside = "imc/1_0mpp/images/*.ome.zarr" if kill_when == "first image written" else "metadata/tissues.parquet"
    trigger = f".killed2025x.tmp-*/killed2025x/{inside}"  # complete files only: partial ones have hidden names
    proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(trigger)):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the export never reached the kill point"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    assert not spora_sd.validate(target).ok
    left = [p for p in out.rglob("*") if p.is_dir() and p.name.endswith("killed2025x")]
    assert left, "the kill should have left the hidden work folder"
    for folder in left:  # neither the hidden work folder nor anything in it passes
        report = spora_sd.validate(folder)
        assert not report.ok
        assert "layout.temporary_file" in {p.rule for p in report.problems}
    if kill_when == "first image written":
        images = list(out.glob(trigger))
        assert 1 <= len(images) < 5  # killed mid-stream
