"""TileDataset with torch: tensors, pickling, and DataLoader workers. Needs torch (not on Python 3.12 here)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import spora_sd
from spora_sd.ml import TileDataset, collate


def test_items_are_tensors(small_cohort: Path) -> None:
    ds = TileDataset(small_cohort, tile_size=64, masks=("cells", "tissue"), labels=("grade",))
    assert isinstance(ds, Dataset)
    item = ds[0]
    assert isinstance(item["image"], torch.Tensor) and item["image"].dtype == torch.float32
    assert item["channel_present"].dtype == torch.bool
    assert item["masks"]["cells"].dtype == torch.int64 and item["masks"]["tissue"].dtype == torch.bool
    numpy_item = TileDataset(small_cohort, tile_size=64, numpy=True)[0]
    np.testing.assert_array_equal(item["image"].numpy(), numpy_item["image"])


def test_collate_pads_tensors(small_cohort: Path) -> None:
    ds = TileDataset(small_cohort, tile_size=64, labels=("grade", "split"))
    items = [ds[0], ds[len(ds) - 1]]
    batch = collate(items)
    assert isinstance(batch["image"], torch.Tensor) and batch["image"].shape == (2, len(ds.panel), 64, 64)
    assert torch.equal(batch["image"][1][items[1]["channel_present"]], items[1]["image"])
    assert batch["row"].dtype == torch.int64 and batch["labels"]["grade"].dtype == torch.int64
    assert batch["labels"]["split"] == [items[0]["labels"]["split"], items[1]["labels"]["split"]]


def test_dataset_pickles_cleanly(small_cohort: Path) -> None:
    ds = TileDataset(spora_sd.open_cohort(small_cohort), tile_size=64, masks=("cells",))
    before = ds[3]  # opens the image and fills the caches
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.reader.stats.chunks_decoded == 0  # no decoded chunk travels with it
    assert all(s.image._array is None for s in clone._sources)  # nor an open zarr array
    after = clone[3]
    assert torch.equal(before["image"], after["image"]) and torch.equal(
        before["masks"]["cells"], after["masks"]["cells"]
    )


def test_dataloader_with_two_workers(small_cohort: Path) -> None:
    ds = TileDataset(small_cohort, tile_size=64, masks=("tissue",), labels=("split",))
    expected = collate([ds[i] for i in range(len(ds))])
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=8, num_workers=workers, collate_fn=collate)
        batches = list(loader)
        image = torch.cat([b["image"] for b in batches])
        assert torch.equal(image, expected["image"])
        assert sum((b["tissue_id"] for b in batches), []) == expected["tissue_id"]
        assert torch.equal(torch.cat([b["masks"]["tissue"] for b in batches]), expected["masks"]["tissue"])


def test_cell_centred_dataloader_with_two_workers(small_cohort: Path) -> None:
    ds = TileDataset.cell_centred(small_cohort, tile_size=16)
    loader = DataLoader(ds, batch_size=32, num_workers=2, collate_fn=collate, shuffle=True)
    seen = torch.cat([b["cell_id"] for b in loader])
    assert len(seen) == len(ds) and sorted(seen.tolist()) == sorted(ds.tiles["cell_id"].tolist())
