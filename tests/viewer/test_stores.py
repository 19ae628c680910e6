"""The per-tissue stores in the encodings Vitessce reads: Zarr v2, plain string arrays, every chunk stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from spora_sd.viewer.stores import build_tissue_stores, write_cells_store, write_labels_store


def _attrs(path: Path) -> dict:
    return json.loads((path / ".zattrs").read_text())


def test_cells_store_uses_plain_string_arrays(tmp_path: Path) -> None:
    cells = pd.DataFrame(
        {"cell_id": [3, 1, 2], "cell_type": ["T cell", None, "B cell"], "CD3E": [5.0, 0.5, np.nan], "x": [1, 2, 3]}
    )
    target = tmp_path / "cells.zarr"
    assert write_cells_store(cells, ["CD3E", "KRT5"], target) == (
        ("cell_type",),
        ("CD3E",),
        ("B cell", "T cell", "unlabelled"),
    )
    # whatever pandas' default string dtype, the names are "string-array"s (not nullable: values + mask)
    assert _attrs(target / "obs" / "cell_id")["encoding-type"] == "string-array"
    assert _attrs(target / "var" / "marker")["encoding-type"] == "string-array"
    assert _attrs(target / "obs" / "cell_type" / "categories")["encoding-type"] == "string-array"
    root = zarr.open_group(target, mode="r", zarr_format=2)
    assert list(root["obs/cell_id"][:]) == ["3", "1", "2"]  # named by the label in the mask
    np.testing.assert_array_equal(root["X"][:, 0], np.array([5.0, 0.5, np.nan], dtype=np.float32))


def test_labels_store_has_every_chunk(tmp_path: Path) -> None:
    mask = np.zeros((300, 520), dtype=np.int32)
    mask[10:20, 10:20] = 7
    target = write_labels_store(mask, tmp_path / "labels.zarr", "t")
    assert _attrs(target)["multiscales"][0]["version"] == "0.4"
    chunks = sorted(p.name for p in (target / "0").iterdir() if p.name[0].isdigit())
    assert chunks == [f"0.{y}.{x}" for y in range(2) for x in range(3)]  # empty ones too: no 404 in the browser
    array = zarr.open_array(target / "0", mode="r", zarr_format=2)
    assert array.dtype == np.uint32 and array.shape == (1, 300, 520)
    np.testing.assert_array_equal(array[0], mask)


def test_tissue_stores_are_written_once(small_cohort: Path, tmp_path: Path) -> None:
    import spora_sd

    cohort = spora_sd.open_cohort(small_cohort)
    tissue = cohort.tissue_ids()[0]
    first = build_tissue_stores(cohort, tissue, tmp_path, cohort.intensity_columns("imc"))
    assert first.labels is not None and first.cells is not None
    stamp = (first.labels / "0" / ".zarray").stat().st_mtime_ns
    again = build_tissue_stores(cohort, tissue, tmp_path, cohort.intensity_columns("imc"))
    assert again == first
    assert (first.labels / "0" / ".zarray").stat().st_mtime_ns == stamp
