"""``write_spatialdata``: spatialdata's format, written in linear time, atomically, keeping the cohort's sharding."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import spatialdata
import zarr
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, ShapesModel
from spatialdata.transformations import Scale, Translation

import spora_sd
from spora_sd.convert.store import write_spatialdata
from spora_sd.errors import TargetExistsError
from spora_sd.testing import assert_sdata_equal

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module", autouse=True)
def _quiet_ome_zarr() -> None:
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)  # "no parent found" for every labels element


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMC + H&E, two pyramid levels, cell / tissue / cell-type labels, cells and tissues tables."""
    root = tmp_path_factory.mktemp("store")
    return spora_sd.make_synthetic_cohort(
        root, name="store2025cohort", n_tissues=3, image_size=96, n_cells=30, n_levels=2, standardization=False
    )


@pytest.fixture(scope="module")
def sdata(cohort: Path) -> spatialdata.SpatialData:
    return spora_sd.to_spatialdata(cohort)


def _digest(path: Path) -> str:
    """One hash over every file under ``path`` (names and bytes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _attributes(store: Path, node: str) -> dict:
    return json.loads((store / node / "zarr.json").read_text())["attributes"]


def _fresh(sdata: spatialdata.SpatialData) -> spatialdata.SpatialData:
    """A new unbacked object sharing the elements (writing sets ``.path``)."""
    return spatialdata.SpatialData(
        images=dict(sdata.images),
        labels=dict(sdata.labels),
        points=dict(sdata.points),
        shapes=dict(sdata.shapes),
        tables=dict(sdata.tables),
        attrs=dict(sdata.attrs),
    )


# --------------------------------------------------------------------------------------------------
# the format


def test_round_trip_equal(sdata, tmp_path: Path) -> None:
    target = tmp_path / "c.zarr"
    assert write_spatialdata(sdata, target, progress=True) == target
    assert sdata.path == target
    back = spatialdata.read_zarr(target)
    assert_sdata_equal(sdata, back)
    assert any(len(image.children) == 2 for image in back.images.values())  # multiscale images survived
    assert set(back.labels) == set(sdata.labels) and set(back.tables) == {"cells", "tissues"}
    assert back.attrs == sdata.attrs and back.attrs["spora"]
    assert spora_sd.write_spatialdata is write_spatialdata  # the public name


def test_metadata_is_what_spatialdata_writes(sdata, tmp_path: Path) -> None:
    """Every group's attributes equal those of ``SpatialData.write`` (whichever spatialdata is installed)."""
    ours = write_spatialdata(_fresh(sdata), tmp_path / "ours.zarr")
    theirs = tmp_path / "theirs.zarr"
    _fresh(sdata).write(theirs)
    nodes = ["", "images", "labels", "tables"]
    for kind in ("images", "labels", "tables"):
        nodes += [f"{kind}/{name}" for name in getattr(sdata, kind)]
    for node in nodes:
        assert _attributes(ours, node) == _attributes(theirs, node), node
    # the arrays differ only where the cohort's layout is kept: shape, dtype and dimension names agree
    for kind in ("images", "labels"):
        for name in getattr(sdata, kind):
            for level in zarr.open_group(theirs / kind / name, mode="r").array_keys():
                a = zarr.open_array(ours / kind / name / level, mode="r")
                b = zarr.open_array(theirs / kind / name / level, mode="r")
                assert (a.shape, a.dtype, a.metadata.dimension_names) == (b.shape, b.dtype, b.metadata.dimension_names)


def test_long_string_arrays_are_written_chunk_by_chunk(sdata, tmp_path: Path, monkeypatch) -> None:
    """The obs names of a table longer than a chunk: one chunk at a time, read back equal, same attributes."""
    from spora_sd.convert import store

    monkeypatch.setattr(store, "STRING_CHUNK", 16)
    cells = sdata.tables["cells"]
    assert cells.n_obs > 3 * 16
    target = write_spatialdata(_fresh(sdata), tmp_path / "c.zarr")
    index = "tables/cells/obs/_index"
    if json.loads((target / index / "zarr.json").read_text())["node_type"] == "group":
        index += "/values"  # pandas 3 strings: anndata >= 0.13 writes a nullable-string-array (values, mask)
    names = zarr.open_array(target / index, mode="r")
    assert names.chunks == (16,) and names.shape == (cells.n_obs,)
    assert _attributes(target, index) == {"encoding-type": "string-array", "encoding-version": "0.2.0"}
    assert_sdata_equal(sdata, spatialdata.read_zarr(target))


def test_images_keep_chunks_sharding_and_codecs(cohort, sdata, tmp_path: Path) -> None:
    target = write_spatialdata(sdata, tmp_path / "c.zarr")
    checked = 0
    for name in sdata.images:
        entry = sdata.attrs["spora"]["elements"][name]
        source = cohort / entry["file"]
        for level in range(2):
            src = zarr.open_array(source / str(level), mode="r")
            out = zarr.open_array(target / "images" / name / f"s{level}", mode="r")
            assert out.metadata.codecs == src.metadata.codecs  # sharding_indexed with its inner codecs
            assert (out.chunks, out.shards, out.compressors) == (src.chunks, src.shards, src.compressors)
            assert out.shards is not None and out.chunks[1:] == (256, 256)
            np.testing.assert_array_equal(out[...], src[...])
            checked += 1
    assert checked == 2 * len(sdata.images) > 0


def test_sharded_source_read_in_smaller_blocks(tmp_path: Path) -> None:
    """Dask blocks smaller than a shard are merged so no shard is written by two tasks (no lost pixels)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60000, (2, 600, 520), dtype="uint16")
    src = zarr.create_array(
        tmp_path / "src.zarr", shape=pixels.shape, dtype="uint16", chunks=(2, 128, 128), shards=(2, 256, 256)
    )
    src[...] = pixels
    lazy = da.from_zarr(src, chunks=(2, 128, 128))  # four blocks per shard
    image = Image2DModel.parse(
        lazy, dims=("c", "y", "x"), c_coords=["a", "b"], transformations={"t": Scale([2.0, 2.0], axes=("y", "x"))}
    )
    assert image.data.chunks[1][0] == 128
    sd = spatialdata.SpatialData(images={"t_image": image})
    target = write_spatialdata(sd, tmp_path / "c.zarr")
    out = zarr.open_array(target / "images" / "t_image" / "s0", mode="r")
    assert (out.chunks, out.shards) == ((2, 128, 128), (2, 256, 256))
    np.testing.assert_array_equal(out[...], pixels)
    assert_sdata_equal(sd, spatialdata.read_zarr(target))


def test_any_spatialdata_round_trips(tmp_path: Path) -> None:
    """In-memory and irregularly chunked rasters, points, shapes and several coordinate systems."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point

    rng = np.random.default_rng(1)
    image = Image2DModel.parse(
        rng.integers(0, 255, (3, 70, 90), dtype="uint8"),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        transformations={"a": Translation([5.0, 3.0], axes=("y", "x")), "b": Scale([0.5, 0.5], axes=("y", "x"))},
    )
    labels = Labels2DModel.parse(
        da.from_array(rng.integers(0, 9, (70, 90), dtype="uint16"), chunks=((30, 30, 10), (40, 40, 10))),
        dims=("y", "x"),
        transformations={"a": Scale([1.0, 1.0], axes=("y", "x"))},
    )
    points = PointsModel.parse(pd.DataFrame({"x": rng.random(20), "y": rng.random(20)}))
    shapes = ShapesModel.parse(gpd.GeoDataFrame({"radius": np.ones(3)}, geometry=[Point(i, i) for i in range(3)]))
    sd = spatialdata.SpatialData(
        images={"rgb": image},
        labels={"seg": labels},
        points={"pts": points},
        shapes={"circles": shapes},
        attrs={"k": [1, "x"]},
    )
    target = write_spatialdata(sd, tmp_path / "any.zarr")
    back = spatialdata.read_zarr(target)
    assert_sdata_equal(sd, back)
    assert zarr.open_array(target / "labels" / "seg" / "s0", mode="r").chunks == (30, 40)  # dask's largest blocks
    _assert_consolidated_as_zarr(target, tmp_path)  # with points and shapes (Parquet folders)


# --------------------------------------------------------------------------------------------------
# consolidated metadata


def test_metadata_consolidated_once_at_the_root(sdata, tmp_path: Path) -> None:
    target = write_spatialdata(sdata, tmp_path / "c.zarr")
    files = sorted(p.parent.relative_to(target).as_posix() for p in target.rglob("zarr.json"))
    root = json.loads((target / "zarr.json").read_text())
    consolidated = root["consolidated_metadata"]["metadata"]
    assert sorted(consolidated) == sorted(f for f in files if f != ".")  # every node, each once
    for f in files:
        if f != ".":
            assert (
                "consolidated_metadata" not in json.loads((target / f / "zarr.json").read_text())
                or json.loads((target / f / "zarr.json").read_text())["consolidated_metadata"] is None
            ), f
    group = zarr.open_consolidated(target, mode="r")
    assert set(group.group_keys()) == {"images", "labels", "tables"}
    _assert_consolidated_as_zarr(target, tmp_path)


def _assert_consolidated_as_zarr(target: Path, tmp_path: Path) -> None:
    """The root ``zarr.json`` is what ``zarr.consolidate_metadata`` writes for the same store, byte for byte."""
    import shutil

    theirs = shutil.copytree(target, tmp_path / "zarr-consolidated.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)  # Parquet folders; v3 consolidation
        zarr.consolidate_metadata(zarr.storage.LocalStore(theirs))
    ours_text, theirs_text = (target / "zarr.json").read_text(), (theirs / "zarr.json").read_text()
    assert json.loads(ours_text) == json.loads(theirs_text)
    assert list(json.loads(ours_text)["consolidated_metadata"]["metadata"]) == list(
        json.loads(theirs_text)["consolidated_metadata"]["metadata"]
    )
    assert ours_text == theirs_text


def test_deterministic(sdata, tmp_path: Path) -> None:
    """The same object gives the same bytes (LaminDB recognises a registered store by its hash)."""
    a = write_spatialdata(_fresh(sdata), tmp_path / "a.zarr")
    b = write_spatialdata(_fresh(sdata), tmp_path / "b.zarr")
    assert _digest(a) == _digest(b)


# --------------------------------------------------------------------------------------------------
# atomicity


def test_existing_target_is_refused_untouched(sdata, tmp_path: Path) -> None:
    target = write_spatialdata(_fresh(sdata), tmp_path / "c.zarr")
    before = _digest(target)
    with pytest.raises(TargetExistsError):
        write_spatialdata(_fresh(sdata), target)
    assert _digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]
    write_spatialdata(_fresh(sdata), target, overwrite=True)  # replaced when asked
    assert_sdata_equal(sdata, spatialdata.read_zarr(target))


def _failing(shape: tuple[int, ...]) -> da.Array:
    def fail() -> np.ndarray:
        raise OSError("disk gone")

    return da.from_delayed(dask.delayed(fail)(), shape=shape, dtype="uint32")


def test_failure_mid_write_leaves_no_target(sdata, tmp_path: Path) -> None:
    name = next(iter(sdata.labels))
    broken = _fresh(sdata)
    element = broken.labels[name]
    broken.labels[name] = Labels2DModel.parse(
        _failing(element.shape), dims=("y", "x"), transformations={"x": Scale([1.0, 1.0], axes=("y", "x"))}
    )
    with pytest.raises(OSError, match="disk gone"):
        write_spatialdata(broken, tmp_path / "c.zarr")
    assert list(tmp_path.iterdir()) == []  # no target, no temporary folder
    # an existing store is left as it was
    target = write_spatialdata(_fresh(sdata), tmp_path / "c.zarr")
    before = _digest(target)
    with pytest.raises(OSError, match="disk gone"):
        write_spatialdata(broken, target, overwrite=True)
    assert _digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]


# --------------------------------------------------------------------------------------------------
# parallel


def test_with_a_distributed_client(sdata, tmp_path: Path) -> None:
    import distributed  # a dependency of the dev and distributed extras: never skipped

    from spora_sd.stats.parallel import active_client

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            assert active_client() is client
            with distributed.get_task_stream(client) as stream:
                target = write_spatialdata(_fresh(sdata), tmp_path / "c.zarr")
    assert any(task["key"][0].startswith("spora-store-") for task in stream.data)  # written on the client
    assert_sdata_equal(sdata, spatialdata.read_zarr(target))
    name = next(iter(sdata.images))
    assert zarr.open_array(target / "images" / name / "s0", mode="r").shards is not None
