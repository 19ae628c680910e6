"""Consolidated metadata of image groups: what spora-sd's writer puts in each image's group zarr.json."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from spora_sd.io.consolidated import CONSOLIDATED_KEY, consolidated_levels, consolidated_problems, with_consolidated
from spora_sd.io.images import open_image_levels, read_image_metadata, write_image


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 2-channel image of two levels, as spora-sd writes it."""
    pixels = np.arange(2 * 300 * 520, dtype="uint16").reshape(2, 300, 520)
    return write_image(
        tmp_path / "d2020x_a1b2c3d4_0000.ome.zarr", pixels, mpp=1.0, channel_names=["A", "B"], n_levels=2
    )


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_writer_consolidates_each_level_as_zarr_reads_it(image: Path) -> None:
    group = _json(image / "zarr.json")
    levels = {lp: _json(image / lp / "zarr.json") for lp in ("0", "1")}
    assert group[CONSOLIDATED_KEY]["must_understand"] is False  # readers that do not know it ignore it
    assert consolidated_levels(group, ["0", "1"]) == levels
    assert consolidated_problems(group, levels) == []
    assert with_consolidated(group, levels) == group  # the same structure as zarr's own writer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec yet
        opened = zarr.open_consolidated(image, mode="r", zarr_format=3)
    assert opened["1"].shape == (2, 150, 260)
    assert read_image_metadata(image).consolidated == levels


def test_no_warning_escapes_the_writer(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_image(tmp_path / "x.ome.zarr", np.zeros((1, 10, 10), "uint8"), mpp=1.0, channel_names=["A"])


def test_levels_not_all_covered_mean_no_consolidated_metadata(image: Path) -> None:
    group = _json(image / "zarr.json")
    assert consolidated_levels(group, ["0", "1", "2"]) is None
    del group[CONSOLIDATED_KEY]
    assert consolidated_levels(group, ["0", "1"]) is None
    assert consolidated_problems(group, {"0": {}}) == []  # optional: nothing to check without it


def test_problems_name_the_level_and_the_key(image: Path) -> None:
    group = _json(image / "zarr.json")
    level1 = _json(image / "1" / "zarr.json")
    assert consolidated_problems(group, {"1": dict(level1, shape=[2, 151, 260])}) == [("1", "shape")]
    del group[CONSOLIDATED_KEY]["metadata"]["1"]
    assert consolidated_problems(group, {"1": level1}) == [("1", "(missing)")]


def test_local_reads_check_each_level_even_when_consolidated(image: Path) -> None:
    # a level rewritten by another tool since: the local reader sees the level's own zarr.json
    shutil.rmtree(image / "1")
    zarr.create_array(image / "1", shape=(2, 40, 40), dtype="uint16", chunks=(2, 256, 256), shards=(2, 256, 256))
    assert [level.shape for level in open_image_levels(image)] == [(2, 300, 520), (2, 40, 40)]
