"""The per-tissue stores the viewer writes on first use: cell outlines and the cell table, for Vitessce.

The image is served straight from the cohort (see :mod:`spora_sd.viewer.server`); two things are not
stored in a form Vitessce reads, so they are written once per tissue into the viewer's cache:

- ``labels.zarr``: the instance mask (an ``.npz``, which has no chunks to serve) as an OME-Zarr 0.4
  image with one channel, 256 x 256 chunks, zlib-compressed (Vitessce's bitmask segmentation layer);
- ``cells.zarr``: an AnnData (Zarr v2) with one row per cell, named by its label in the mask (the
  bitmask layer finds a cell's colour by that name), the ``cell_type``/``cell_category`` columns as
  cell sets, and the cells' mean marker intensities as ``X`` (the heatmap).

Both are small next to the image (a label per pixel, a few floats per cell); each is written into a
temporary sibling and renamed (:func:`spora_sd.io.atomic.atomic_path`), so a crash never leaves a half
store behind for the browser.

Examples
--------
>>> CELL_SET_COLUMNS
('cell_type', 'cell_category')
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spora_sd.io.atomic import atomic_path

if TYPE_CHECKING:
    from spora_sd.io.cohort import Cohort

__all__ = ["CELL_SET_COLUMNS", "LABELS_CHUNK", "TissueStores", "write_cells_store", "write_labels_store"]

logger = logging.getLogger(__name__)

#: Columns of the cells table that become cell sets (the first present colours the cells).
CELL_SET_COLUMNS = ("cell_type", "cell_category")
#: Chunk side of the labels store (the cohort's image chunk).
LABELS_CHUNK = 256


@dataclass(frozen=True)
class TissueStores:
    """What :func:`write_cells_store` found: the paths, and the columns Vitessce is told about."""

    labels: Path | None
    cells: Path | None
    set_columns: tuple[str, ...]
    features: tuple[str, ...]
    #: the values of the first set column (the cell types), sorted: the cell sets coloured at start
    cell_types: tuple[str, ...] = ()


def _zarr_json(path: Path, name: str, value: dict) -> None:
    (path / name).write_text(json.dumps(value), encoding="utf-8")


def write_labels_store(mask: np.ndarray, target: Path, name: str) -> Path:
    """Write an instance mask as a one-channel OME-Zarr 0.4 (Zarr v2) image at ``target``.

    Zarr v2 with zlib, the combination every Vitessce release reads; ``uint32`` labels (Vitessce's
    bitmask layer reads 8-, 16- and 32-bit labels).

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> out = write_labels_store(np.eye(300, dtype=np.int32), pathlib.Path(tempfile.mkdtemp()) / "l.zarr", "t")
    >>> sorted(p.name for p in (out / "0").iterdir() if p.name[0].isdigit())
    ['0.0.0', '0.0.1', '0.1.0', '0.1.1']
    """
    import numcodecs
    import zarr

    mask = np.asarray(mask)
    labels = mask.astype(np.uint32, copy=False)[None]
    with atomic_path(target) as tmp:
        tmp.mkdir()
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        array = root.create_array(
            "0",
            shape=labels.shape,
            chunks=(1, LABELS_CHUNK, LABELS_CHUNK),
            dtype=labels.dtype,
            compressors=numcodecs.Zlib(level=1),
            fill_value=0,
            # every chunk is stored: a missing one is a 404, which the browser reports as a console error
            config={"write_empty_chunks": True},
        )
        array[...] = labels
        attrs = {
            "multiscales": [
                {
                    "version": "0.4",
                    "name": name,
                    "axes": [
                        {"name": "c", "type": "channel"},
                        {"name": "y", "type": "space", "unit": "micrometer"},
                        {"name": "x", "type": "space", "unit": "micrometer"},
                    ],
                    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}],
                }
            ],
            "omero": {"channels": [{"label": "cells", "color": "FFFFFF", "window": {"start": 0, "end": 1}}]},
        }
        root.attrs.update(attrs)
    return target


def _categorical(values: pd.Series) -> pd.Categorical:
    """A categorical with object-dtype categories (see :func:`write_cells_store`)."""
    text = values.astype(str).to_numpy(dtype=object)
    categories = pd.Index(sorted(set(text)), dtype=object)
    return pd.Categorical(text, categories=categories)


def write_cells_store(
    cells: pd.DataFrame, features: list[str], target: Path
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Write the cells of one tissue as an AnnData (Zarr v2) for Vitessce; return (set columns, features, cell types).

    Rows are named by ``cell_id`` (the label in the instance mask); ``X`` holds the ``features``
    (mean intensities) that are present, as float32.

    Examples
    --------
    >>> import tempfile, pathlib, pandas as pd
    >>> df = pd.DataFrame({"cell_id": [1, 2], "cell_type": ["T", "B"], "CD3E": [5.0, 0.1]})
    >>> write_cells_store(df, ["CD3E", "MS4A1"], pathlib.Path(tempfile.mkdtemp()) / "cells.zarr")
    (('cell_type',), ('CD3E',), ('B', 'T'))
    """
    import anndata as ad

    present = [f for f in features if f in cells.columns]
    set_columns = tuple(c for c in CELL_SET_COLUMNS if c in cells.columns)
    # object dtype throughout: with pandas 3's string dtype anndata writes a nullable-string encoding
    # (values + mask), which Vitessce's AnnData loader does not read
    obs = pd.DataFrame(
        {c: _categorical(cells[c].astype("string").fillna("unlabelled")) for c in set_columns},
        index=pd.Index(
            cells["cell_id"].astype("int64").astype(str).to_numpy(dtype=object), dtype=object, name="cell_id"
        ),
    )
    x = cells[present].to_numpy(dtype=np.float32, na_value=np.nan) if present else np.zeros((len(cells), 0), np.float32)
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(present, dtype=object, name="marker")))
    with atomic_path(target) as tmp, ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        # anndata announces that v3 becomes its default; Vitessce's AnnData loader reads v2, so we ask for it
        warnings.filterwarnings("ignore", "Writing zarr v2", UserWarning)
        adata.write_zarr(tmp)
    cell_types = tuple(str(c) for c in obs[set_columns[0]].cat.categories) if set_columns else ()
    return set_columns, tuple(present), cell_types


def build_tissue_stores(cohort: Cohort, tissue_id: str, folder: Path, features: list[str]) -> TissueStores:
    """Write (once) the labels and cells stores of a tissue under ``folder``; reuse them when present."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "labels.zarr"
    cells_path = folder / "cells.zarr"
    meta = folder / "stores.json"
    if meta.is_file():
        known = json.loads(meta.read_text(encoding="utf-8"))
        return TissueStores(
            labels if known["labels"] else None,
            cells_path if known["cells"] else None,
            tuple(known["set_columns"]),
            tuple(known["features"]),
            tuple(known["cell_types"]),
        )
    has_labels = has_cells = False
    set_columns: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    cell_types: tuple[str, ...] = ()
    try:
        mask = cohort.instance_mask(tissue_id)
    except FileNotFoundError:
        logger.info("%s: no instance mask; the view shows no cell outlines", tissue_id)
    else:
        write_labels_store(mask, labels, tissue_id)
        has_labels = True
    if cohort.cell_columns:
        cells = cohort.cells(columns=[*CELL_SET_COLUMNS, *features], tissues=[tissue_id])
        if len(cells):
            set_columns, present, cell_types = write_cells_store(cells, features, cells_path)
            has_cells = True
    state = {
        "labels": has_labels,
        "cells": has_cells,
        "set_columns": list(set_columns),
        "features": list(present),
        "cell_types": list(cell_types),
    }
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(state), encoding="utf-8")
    return TissueStores(
        labels if has_labels else None, cells_path if has_cells else None, set_columns, present, cell_types
    )
