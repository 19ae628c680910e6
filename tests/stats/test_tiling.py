"""Tilings: which tiles are kept, where they lie, and how much tissue they cover."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spora_sd
from spora_sd.datasets.synthetic import make_synthetic_cohort
from spora_sd.io.cohort import open_cohort
from spora_sd.io.masks import write_mask
from spora_sd.stats.tiling import compute_tiling, tile_starts, tile_tissue_fraction, tiles_coverage


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiling")
    return make_synthetic_cohort(
        root,
        name="tile2025test",
        n_tissues=3,
        image_size=(100, 75),
        n_cells=20,
        n_channels=4,
        standardization=False,
        tiling=False,
        seed=2,
    )


def _brute_fraction(mask: np.ndarray, row: int, col: int, size: int) -> float:
    padded = np.zeros((mask.shape[0] + size, mask.shape[1] + size), bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return padded[row : row + size, col : col + size].sum() / size**2


def test_tile_starts() -> None:
    assert tile_starts(512, 256, 256, "default").tolist() == [0, 256]
    assert tile_starts(600, 256, 256, "default").tolist() == [0, 256, 344]  # last one flush with the edge
    assert tile_starts(600, 256, 128, "default").tolist() == [0, 128, 256, 344]
    assert tile_starts(255, 256, 256, "default").tolist() == []
    assert tile_starts(600, 256, 256, "grid").tolist() == [0, 256, 512]
    assert tile_starts(600, 256, 200, "grid").tolist() == [0, 200, 400]
    with pytest.raises(ValueError, match="strategy"):
        tile_starts(10, 4, 4, "random")


def test_fraction_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((37, 29)) < 0.4
    for strategy in ("default", "grid"):
        rows, cols = tile_starts(37, 8, 5, strategy), tile_starts(29, 8, 5, strategy)
        fraction = tile_tissue_fraction(mask, rows, cols, 8)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                assert fraction[i, j] == _brute_fraction(mask, r, c, 8)


def test_coverage_by_hand() -> None:
    # 6 x 6 mask with 10 tissue pixels; 3 x 3 tiles
    mask = np.zeros((6, 6), bool)
    mask[0, :4] = True  # 4 pixels in row 0
    mask[4:, 4:] = True  # 4 pixels in the bottom-right corner
    mask[2, 2] = mask[5, 0] = True
    # the top-left tile covers (0,0..2) and (2,2): 4 pixels of 10
    assert tiles_coverage(mask, np.array([0]), np.array([0]), 3) == 0.4
    # plus the bottom-right tile (rows 3-5, cols 3-5): 4 more
    assert tiles_coverage(mask, np.array([0, 3]), np.array([0, 3]), 3) == 0.8
    # overlapping tiles count a pixel once: (0,0) and (0,1) cover (0,0..3) and (2,2)
    assert tiles_coverage(mask, np.array([0, 0]), np.array([0, 1]), 3) == 0.5
    # a grid tile past the edge covers only what is inside
    assert tiles_coverage(mask, np.array([4]), np.array([4]), 3) == 0.4
    assert tiles_coverage(np.zeros((3, 3), bool), np.array([], int), np.array([], int), 2) == 1.0
    assert tiles_coverage(mask, np.array([], int), np.array([], int), 2) == 0.0


def test_default_tiles_lie_inside_and_pass_min_tissue(cohort_dir: Path) -> None:
    path = compute_tiling(cohort_dir, tile_size=32, min_tissue=0.5)
    assert path == cohort_dir / "tiling" / "1_0mpp" / "default" / "32_tile_coordinates.parquet"
    cohort = open_cohort(cohort_dir)
    coords, stats = cohort.tiling(1.0, "default", 32)
    assert list(coords.columns) == ["tissue_id", "tile_id", "row", "col"]
    for tid in cohort.tissue_ids():
        mask = cohort.tissue_mask(tid).astype(bool)
        tiles = coords[coords["tissue_id"] == tid]
        assert tiles["tile_id"].tolist() == list(range(len(tiles)))
        assert ((tiles["row"] + 32 <= mask.shape[0]) & (tiles["col"] + 32 <= mask.shape[1])).all()
        kept = set(zip(tiles["row"], tiles["col"], strict=True))
        for r in tile_starts(mask.shape[0], 32, 32):
            for c in tile_starts(mask.shape[1], 32, 32):
                assert ((r, c) in kept) == (_brute_fraction(mask, r, c, 32) >= 0.5)
        assert stats.loc[tid, "num_tiles"] == len(tiles)
        covered = np.zeros_like(mask)
        for r, c in kept:
            covered[r : r + 32, c : c + 32] = True
        assert stats.loc[tid, "coverage_ratio"] == pytest.approx((covered & mask).sum() / mask.sum())
    assert stats[["tile_size", "stride", "min_tissue", "strategy"]].drop_duplicates().values.tolist() == [
        [32, 32, 0.5, "default"]
    ]
    assert spora_sd.validate(cohort_dir).ok


def test_grid_reaches_the_edges(cohort_dir: Path) -> None:
    compute_tiling(cohort_dir, tile_size=32, strategy="grid", min_tissue=0.0)
    cohort = open_cohort(cohort_dir)
    coords, stats = cohort.tiling(1.0, "grid", 32)
    for tid in cohort.tissue_ids():
        height, width = cohort.tissue_mask(tid).shape
        tiles = coords[coords["tissue_id"] == tid]
        assert len(tiles) == len(tile_starts(height, 32, 32, "grid")) * len(tile_starts(width, 32, 32, "grid"))
        assert tiles["row"].max() + 32 >= height and tiles["col"].max() + 32 >= width
        assert tiles["row"].max() < height and tiles["col"].max() < width
        assert stats.loc[tid, "coverage_ratio"] == 1.0  # min_tissue=0 keeps every tile
    assert spora_sd.validate(cohort_dir).ok


def test_stride_overlap_and_empty_mask(cohort_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(cohort_dir, tmp_path / cohort_dir.name)
    cohort = open_cohort(copy)
    empty = cohort.tissue_ids()[0]
    write_mask(cohort.paths.tissue_mask(1.0, empty), np.zeros_like(cohort.tissue_mask(empty)))
    compute_tiling(copy, tile_size=16, stride=8, min_tissue=0.25)
    coords, stats = open_cohort(copy).tiling(1.0, "default", 16)
    assert stats.loc[empty, "num_tiles"] == 0 and stats.loc[empty, "coverage_ratio"] == 1.0
    other_id = cohort.tissue_ids()[1]
    other = coords[coords["tissue_id"] == other_id]
    height, width = cohort.tissue_mask(other_id).shape
    assert set(other["row"]) <= set(tile_starts(height, 16, 8).tolist())
    assert set(other["col"]) <= set(tile_starts(width, 16, 8).tolist())
    assert 8 in set(np.diff(np.unique(other["row"])))  # neighbouring tiles overlap by half
    assert stats["stride"].eq(8).all()


def test_refuses_to_overwrite_and_bad_arguments(cohort_dir: Path) -> None:
    compute_tiling(cohort_dir, tile_size=32)
    with pytest.raises(FileExistsError, match="overwrite"):
        compute_tiling(cohort_dir, tile_size=32, overwrite=False)
    for kwargs, message in [
        ({"strategy": "random"}, "strategy"),
        ({"stride": 0}, "stride"),
        ({"tile_size": 0}, "tile_size"),
        ({"min_tissue": 1.5}, "min_tissue"),
    ]:
        with pytest.raises(ValueError, match=message):
            compute_tiling(cohort_dir, **kwargs)


def test_dask_client_gives_the_same_tables(cohort_dir: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    loop = compute_tiling(cohort_dir, tile_size=16, strategy="grid", min_tissue=0.3)
    expected = (pd.read_parquet(loop), pd.read_parquet(loop.with_name("16_tile_stats.parquet")))
    copy = shutil.copytree(cohort_dir, tmp_path / cohort_dir.name)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as tasks:
            path = compute_tiling(copy, tile_size=16, strategy="grid", min_tissue=0.3)
    assert sum(t["key"].startswith("_tile_one") for t in tasks.data) == 3
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected[0])
    pd.testing.assert_frame_equal(pd.read_parquet(path.with_name("16_tile_stats.parquet")), expected[1])
