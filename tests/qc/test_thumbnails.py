"""Thumbnails read a downsampled level, in bounded blocks, and draw the tissue outline on a composite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import spora_sd
from spora_sd.io.images import CheckedLevel, open_level, write_image
from spora_sd.qc.thumbnails import OUTLINE_RGB, composite, outline, pick_level, pooled, resize_mask


class CountingLevel(CheckedLevel):
    """A real level that also records the regions read (to check what a thumbnail touches)."""

    def __init__(self, level: CheckedLevel) -> None:
        super().__init__(level.image, level.level, level.array)
        self.regions: list[list[tuple[int, int]]] = []

    def read(self, region):
        self.regions.append([tuple(r) for r in region])
        return super().read(region)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-channel 1000 x 800 image with levels 0..3, written by the cohort writer."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, size=(3, 1000, 800), dtype=np.uint16)
    path = tmp_path_factory.mktemp("pyramid") / "x.ome.zarr"
    return write_image(path, image, mpp=0.5, channel_names=["A", "B", "C"], n_levels=4)


def test_pick_level_takes_the_smallest_level_that_is_large_enough(pyramid: Path, tmp_path: Path) -> None:
    choice, level = pick_level([(0.5, pyramid)], 160)
    assert (choice.level, choice.shape, choice.factor) == ("2", (3, 250, 200), 2)
    assert level.shape == (3, 250, 200) and choice.describe() == "0_5mpp level 2 (250 x 200 px)"
    assert pick_level([(0.5, pyramid)], 1000)[0].level == "0"
    assert pick_level([(0.5, pyramid)], 5000)[0].level == "0"  # nothing that large: the largest
    # a coarser resolution folder with a smaller image wins over a big level 0
    small = write_image(
        tmp_path / "s.ome.zarr", np.ones((3, 200, 160), np.uint16), mpp=2.5, channel_names=["A", "B", "C"]
    )
    assert pick_level([(0.5, pyramid), (2.5, small)], 160)[0].image == small


def test_pooled_reads_in_bounded_blocks_and_averages(pyramid: Path) -> None:
    level = CountingLevel(open_level(pyramid, "0"))
    out = pooled(level, 7, block=256)
    full = np.asarray(level.array[:]).astype(np.float64)
    h, w = 1000 // 7, 800 // 7
    expected = full[:, : h * 7, : w * 7].reshape(3, h, 7, w, 7).mean(axis=(2, 4))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.shape == (3, h, w) and out.dtype == np.float32
    sides = [(y1 - y0, x1 - x0) for _, (y0, y1), (x0, x1) in level.regions]
    assert max(max(s) for s in sides) <= 256 and len(level.regions) > 1  # never the whole image at once
    assert all(s % 7 == 0 for side in sides for s in side)  # blocks hold whole pooled pixels


def test_composite_outline_and_mask_resize() -> None:
    red = np.zeros((20, 20), np.float32)
    red[5:15, 5:15] = 100.0
    flat = np.full((20, 20), 3.0, np.float32)  # a failed stain stays dark, it is not stretched
    rgb = composite(np.stack([red, flat, np.zeros_like(red)]))
    assert rgb[10, 10, 0] == 255 and rgb[0, 0, 0] == 0 and rgb[..., 1].max() == 0
    he = composite(np.stack([np.full((4, 4), 300.0)] * 3), rescale=False)
    assert (he == 255).all()
    mask = resize_mask(np.pad(np.ones((5, 5)), 5), (20, 20))
    drawn = outline(rgb, mask)
    ring = (drawn == OUTLINE_RGB).all(axis=2)
    assert ring.any() and not ring[10, 10] and not ring[0, 0]


def test_thumbnail_of_a_cohort_image_uses_its_pyramid(tmp_path: Path) -> None:
    root = spora_sd.make_synthetic_cohort(tmp_path, n_tissues=1, modalities=("imc",), image_size=600, n_levels=3)
    cohort = spora_sd.open_cohort(root)
    tissue = cohort.tissue_ids()[0]
    choice, _ = pick_level([(1.0, cohort.image_path(tissue, "imc"))], 160)
    assert choice.level == "1" and choice.factor == 2  # 600 -> 300 px level, pooled 2 x 2
