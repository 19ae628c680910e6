"""Machine learning on spora cohorts: a fast PyTorch tile dataset.

A typical training loader::

    from spora_sd.ml import TileDataset, collate

    ds = TileDataset("jackson2020single", tile_size=256, masks=("cells",), split="train")
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=2, collate_fn=collate)

The dataset's core (indexing, reading, standardization, collation) is numpy; items are torch
tensors when torch is installed. See ``docs/ml.md``.
"""

from __future__ import annotations

from spora_sd.ml.collate import collate
from spora_sd.ml.reader import ArraySource, TileReader, ZarrSource
from spora_sd.ml.standardize import Standardizer, parse_standardization, standardize_channels
from spora_sd.ml.tiles import TileDataset, cell_centres

__all__ = [
    "ArraySource",
    "Standardizer",
    "TileDataset",
    "TileReader",
    "ZarrSource",
    "cell_centres",
    "collate",
    "parse_standardization",
    "standardize_channels",
]
