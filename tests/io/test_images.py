"""OME-Zarr v3 images: layout rules of spec §4 and lossless, lazy reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from spora_sd.errors import CohortFormatError
from spora_sd.io.images import (
    MAX_SHARDS,
    build_pyramid,
    open_image_levels,
    read_image_metadata,
    shard_shape,
    write_image,
)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_write_read_bit_exact(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(1)
    img = (rng.random((3, 300, 517)) * 200).astype(dtype)
    path = write_image(tmp_path / "d2020x_a1b2c3d4_0000.ome.zarr", img, mpp=0.5, channel_names=["A", "B", "C"])
    levels = open_image_levels(path)
    assert len(levels) == 1
    assert levels[0].dtype == img.dtype
    np.testing.assert_array_equal(levels[0].compute(), img)


def test_metadata_and_chunks(tmp_path: Path) -> None:
    img = np.zeros((4, 600, 700), "uint16")
    path = write_image(tmp_path / "x.ome.zarr", img, mpp=0.375, channel_names=list("ABCD"), n_levels=3)
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][1]["unit"] == "micrometer"
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.375, 0.375]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [1.0, 1.5, 1.5]
    assert [c["label"] for c in ome["omero"]["channels"]] == list("ABCD")
    info = read_image_metadata(path)
    assert info.mpp == 0.375 and info.level_paths == ["0", "1", "2"]
    arr = zarr.open_array(path / "0")
    assert arr.chunks == (4, 256, 256)
    assert arr.shards is not None and arr.shards[1] % 256 == 0
    levels = open_image_levels(path)
    assert [lv.shape for lv in levels] == [(4, 600, 700), (4, 300, 350), (4, 150, 175)]
    assert levels[0].chunksize == (4, 256, 256)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((3, 100, 100), 256), ((3, 2560, 2560), 256), ((3, 2561, 2560), 512), ((3, 40000, 30000), 3840)],
)
def test_shard_shape_keeps_at_most_100_shards(shape: tuple[int, int, int], expected: int) -> None:
    c, sy, sx = shard_shape(shape)
    assert (c, sy, sx) == (shape[0], expected, expected)
    assert -(-shape[1] // sy) * -(-shape[2] // sx) <= MAX_SHARDS


def test_pyramid_levels_are_means(tmp_path: Path) -> None:
    img = np.arange(2 * 8 * 8, dtype="float32").reshape(2, 8, 8)
    levels = build_pyramid(img, 2)
    np.testing.assert_allclose(levels[1].compute(), img.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4)))


def test_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 dimensions"):
        write_image(tmp_path / "a.ome.zarr", np.zeros((5, 5)), mpp=1.0, channel_names=["A"])
    with pytest.raises(ValueError, match="channel names"):
        write_image(tmp_path / "a.ome.zarr", np.zeros((2, 5, 5)), mpp=1.0, channel_names=["A"])
    assert not (tmp_path / "a.ome.zarr").exists()


def test_zarr_v2_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v2.ome.zarr"
    zarr.open_group(path, mode="w", zarr_format=2).create_array("0", shape=(1, 4, 4), dtype="uint8")
    with pytest.raises(CohortFormatError, match=r"image.zarr_format"):
        read_image_metadata(path)


def test_missing_ome_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.ome.zarr"
    zarr.open_group(path, mode="w", zarr_format=3).create_array("0", shape=(1, 4, 4), dtype="uint8")
    with pytest.raises(CohortFormatError, match=r"image.ome_metadata"):
        open_image_levels(path)
