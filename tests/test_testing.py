"""spora_sd.testing: the assertions fail on every kind of difference, naming the file or element."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import spora_sd
from spora_sd.io.masks import read_mask, write_mask
from spora_sd.testing import assert_cohorts_equal, assert_sdata_equal


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spora_sd.make_synthetic_cohort(tmp_path_factory.mktemp("testing"), n_tissues=2, image_size=64, n_cells=10)


@pytest.fixture
def copy(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / source.name))


def _failure(a: Path, b: Path, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        assert_cohorts_equal(a, b, **kwargs)
    return str(info.value)


def _first(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


def test_equal_cohorts_pass(source: Path, copy: Path) -> None:
    assert_cohorts_equal(source, copy)
    assert_cohorts_equal(str(source), spora_sd.open_cohort(copy))  # a str and a Cohort too


def test_changed_table_value(source: Path, copy: Path) -> None:
    file = copy / "metadata" / "tissues.parquet"
    tissues = pd.read_parquet(file)
    tissues.loc[0, "age"] += 1
    tissues.to_parquet(file)
    message = _failure(source, copy)
    assert "(1 difference)" in message
    assert "\n  metadata/tissues.parquet: " in message and '"age"' in message


@pytest.mark.parametrize(
    "table",
    [
        "metadata/cells.parquet",
        "imc/channels.parquet",
        "imc/channels_per_tissue.parquet",
        "imc/1_0mpp/standardization/quantile_clipping/uq_0.99/global_level_means.parquet",
        "tiling/1_0mpp/default/32_tile_coordinates.parquet",
        "segmentations/1_0mpp/cell_masks/cell_types/label_encoder.parquet",
    ],
)
def test_every_table_is_compared(source: Path, copy: Path, table: str) -> None:
    frame = pd.read_parquet(copy / table)
    frame.iloc[:, ::-1].to_parquet(copy / table)  # the same values, the columns in another order
    assert f"\n  {table}: " in _failure(source, copy)


def test_changed_pixel(source: Path, copy: Path) -> None:
    image = _first(copy / "imc" / "1_0mpp" / "images", "*.ome.zarr")
    level = zarr.open_array(image / "0", mode="r+")
    level[1, 5, 7] = level[1, 5, 7] + 1
    message = _failure(source, copy)
    rel = image.relative_to(copy).as_posix()
    assert f"\n  {rel}/0: 1 of {np.prod(level.shape)} pixels differ; first at (1, 5, 7)" in message


def test_changed_image_metadata(source: Path, copy: Path) -> None:
    image = _first(copy / "he" / "1_0mpp" / "images", "*.ome.zarr")
    meta = json.loads((image / "zarr.json").read_text())
    meta["attributes"]["note"] = "edited"
    (image / "zarr.json").write_text(json.dumps(meta))
    message = _failure(source, copy)
    assert f"{image.relative_to(copy).as_posix()}/zarr.json: " in message and "note" in message
    assert_cohorts_equal(source, copy, check_zarr_metadata=False)  # the pixels are the same


def test_extra_image_level(source: Path, copy: Path) -> None:
    image = _first(copy / "imc" / "1_0mpp" / "images", "*.ome.zarr")
    shutil.copytree(image / "0", image / "9")
    assert f"{image.relative_to(copy).as_posix()}/9: Zarr node only in the second cohort" in _failure(source, copy)


def test_stray_file_inside_an_image(source: Path, copy: Path) -> None:
    image = _first(copy / "imc" / "1_0mpp" / "images", "*.ome.zarr")
    (image / ".zattrs").write_text("{}")
    assert f"{image.relative_to(copy).as_posix()}/.zattrs: only in the second cohort" in _failure(source, copy)


def test_changed_mask_label(source: Path, copy: Path) -> None:
    path = _first(copy / "segmentations" / "1_0mpp" / "cell_masks" / "instances", "*.npz")
    mask = read_mask(path)
    mask[10, 10] = mask.max() + 1
    write_mask(path, mask)
    message = _failure(source, copy)
    assert f"\n  {path.relative_to(copy).as_posix()}: 1 of {mask.size} labels differ; first at (10, 10)" in message


def test_changed_mask_dtype(source: Path, copy: Path) -> None:
    path = _first(copy / "segmentations" / "1_0mpp" / "tissue_masks", "*.npz")
    mask = read_mask(path)
    write_mask(path, mask.astype("int64"))
    message = _failure(source, copy)
    assert f"{path.relative_to(copy).as_posix()}: dtype {mask.dtype} != int64" in message


def test_missing_file(source: Path, copy: Path) -> None:
    (copy / "tiling" / "1_0mpp" / "default" / "32_tile_stats.parquet").unlink()
    message = _failure(source, copy)
    assert "tiling/1_0mpp/default/32_tile_stats.parquet: only in the first cohort" in message


def test_missing_folder_is_named_once(source: Path, copy: Path) -> None:
    shutil.rmtree(copy / "tiling")
    message = _failure(source, copy)
    assert "(1 difference)" in message and "tiling: only in the first cohort" in message


def test_missing_image(source: Path, copy: Path) -> None:
    image = _first(copy / "imc" / "1_0mpp" / "images", "*.ome.zarr")
    shutil.rmtree(image)
    assert f"{image.relative_to(copy).as_posix()}: only in the first cohort" in _failure(source, copy)


def test_extra_file_of_any_kind(source: Path, copy: Path) -> None:
    (copy / "imc" / "notes.txt").write_text("x")
    assert "imc/notes.txt: only in the second cohort" in _failure(source, copy)
    assert "imc/notes.txt: only in the first cohort" in _failure(copy, source)


def test_other_files_are_compared_byte_for_byte(source: Path, copy: Path, tmp_path: Path) -> None:
    (copy / "README.txt").write_text("a")
    other = Path(shutil.copytree(copy, tmp_path / "other" / copy.name))
    assert_cohorts_equal(copy, other)
    (other / "README.txt").write_text("b")
    assert "README.txt: contents differ" in _failure(copy, other)


def test_file_versus_folder(source: Path, copy: Path) -> None:
    (copy / "metadata" / "cells.parquet").unlink()
    (copy / "metadata" / "cells.parquet").mkdir()
    assert "metadata/cells.parquet: a file in the first cohort, a folder in the second" in _failure(source, copy)


def test_no_such_folder(source: Path, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no such directory"):
        assert_cohorts_equal(source, tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# SpatialData


@pytest.fixture(scope="module")
def sdata(source: Path):
    return spora_sd.to_spatialdata(source)


def _sdata_failure(a, b) -> str:
    with pytest.raises(AssertionError) as info:
        assert_sdata_equal(a, b)
    return str(info.value)


def test_equal_sdata_pass(source: Path, sdata) -> None:
    assert_sdata_equal(sdata, spora_sd.to_spatialdata(source))


def test_sdata_through_zarr_pass(source: Path, sdata, tmp_path: Path) -> None:
    import spatialdata

    from spora_sd.convert.store import write_spatialdata

    path = write_spatialdata(spora_sd.to_spatialdata(source), tmp_path / "c.zarr")
    assert_sdata_equal(sdata, spatialdata.read_zarr(path))


def test_sdata_missing_element(source: Path, sdata) -> None:
    other = spora_sd.to_spatialdata(source)
    name = sorted(other.labels)[0]
    del other.labels[name]
    assert f"labels/{name}: only in the first SpatialData" in _sdata_failure(sdata, other)


def test_sdata_changed_pixel(source: Path, sdata) -> None:
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation
    from xarray import DataTree

    other = spora_sd.to_spatialdata(source)
    name = sorted(other.images)[0]
    element = other.images[name]
    scale0 = element["scale0"]["image"] if isinstance(element, DataTree) else element
    pixels = np.asarray(scale0.data).copy()
    pixels[0, 0, 0] += 1
    other.images[name] = Image2DModel.parse(
        pixels,
        dims=("c", "y", "x"),
        c_coords=list(scale0.coords["c"].values),
        transformations=get_transformation(element, get_all=True),
    )
    assert f"\n  images/{name}: " in _sdata_failure(sdata, other)


def test_sdata_changed_table_value(source: Path, sdata) -> None:
    other = spora_sd.to_spatialdata(source)
    table = other.tables["cells"]
    table.X = np.asarray(table.X).copy()
    table.X[0, 0] += 1
    assert "\n  tables/cells: " in _sdata_failure(sdata, other)


def test_sdata_changed_transformation(source: Path, sdata) -> None:
    from spatialdata.transformations import Scale, get_transformation, set_transformation

    other = spora_sd.to_spatialdata(source)
    name = sorted(other.labels)[0]
    system = next(iter(get_transformation(other.labels[name], get_all=True)))
    set_transformation(other.labels[name], Scale([2.0, 2.0], axes=("y", "x")), to_coordinate_system=system)
    assert f"labels/{name}: transformation to {system!r} differs" in _sdata_failure(sdata, other)
    assert_sdata_equal(sdata, other, check_transformations=False)  # the values are equal


def test_sdata_changed_attrs(source: Path) -> None:
    a, b = spora_sd.to_spatialdata(source), spora_sd.to_spatialdata(source)
    a.attrs["extra"] = {"values": [1, 2], "array": np.arange(3)}
    b.attrs["extra"] = {"values": [1, 3], "array": np.arange(3)}
    assert "\n  attrs: ['extra']['values'][1]: 2 != 3" in _sdata_failure(a, b)
    b.attrs["extra"] = {"values": [1, 2], "array": np.arange(3)}
    assert_sdata_equal(a, b)
    del b.attrs["extra"]
    assert "attrs: keys: only in the first ['extra']" in _sdata_failure(a, b)
