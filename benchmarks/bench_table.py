"""Table: building the cell table (AnnData) of 6 million cells x 43 markers, against a plain pyarrow read.

The cohort holds only what the cell table needs (the table benchmark renders no image): the
``tissues``, ``channels`` and ``channels_per_tissue`` tables and a ``cells.parquet`` written with pyarrow,
shaped like ``cords2024cancer`` (2,070 tissues, 43 markers, 5,984,454 cells; float32 intensities,
dictionary-encoded ``tissue_id`` and cell-type columns, rows sorted by tissue and cell id).

- **spora**: ``build_cell_table(cohort, ..., spatial=False)``: the AnnData with ``X`` (float32), ``var``,
  categorical ``obs``, obs names, region / instance keys, validated by ``TableModel.validate``. The
  centroids (``obsm["spatial"]``) come from the instance masks and are timed by ``bench_open``.
- **baseline** (``table``, goal <= 1.5): ``pyarrow.parquet.read_table(cells.parquet, columns=<the same
  columns>)``.
- **second baseline** (``table_vs_anndata``, goal <= 1.0): ``spatialdata.read_zarr`` of a SpatialData
  store that holds only that AnnData (written once by ``SpatialData.write``), i.e. anndata's own Zarr
  reader of the same table: what a user pays to get the cell table from a converted store.

The three contenders run interleaved, best of ``repeat`` each, after one warm-up call each.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from common import WORK, Result, timed

SIZES = {
    True: {"n_tissues": 20, "n_cells": 20_000, "n_markers": 43, "repeat": 1},
    False: {"n_tissues": 2070, "n_cells": 5_984_454, "n_markers": 43, "repeat": 3},
}
NAME = "bench2025table"
CELL_TYPES = ["B cell", "T cell", "macrophage", "fibroblast", "endothelial cell", "tumor cell"]


def _cohort(quick: bool):
    from spora_sd import layout
    from spora_sd.io.tables import write_table

    p = SIZES[quick]
    root = WORK / ("quick" if quick else "full") / NAME
    paths = layout.CohortPaths(root)
    if paths.cells.is_file():
        return root
    rng = np.random.default_rng(0)
    tissue_ids = [layout.compose_tissue_id(NAME, layout.patient_hash(i, NAME), 0) for i in range(p["n_tissues"])]
    markers = [f"MARKER{i}" for i in range(p["n_markers"])]
    write_table(
        pd.DataFrame(
            {
                "tissue_id": tissue_ids,
                "patient_id": [t.split("_")[1] for t in tissue_ids],
                "specimen_id": "0000",
                "modality": "imc",
                "alignment": pd.Series([None] * len(tissue_ids), dtype=object),
            }
        ),
        paths.tissues,
        "tissues",
    )
    channels = pd.DataFrame({"channel_name": markers, "qc_pass": True, "uniprot_id": "", "is_nuclear_marker": False})
    write_table(channels, paths.channels("imc"), "channels")
    cpt = pd.DataFrame(True, index=pd.Index(tissue_ids, name="tissue_id"), columns=markers)
    write_table(cpt, paths.channels_per_tissue("imc"), "channels_per_tissue")
    per = np.full(len(tissue_ids), p["n_cells"] // len(tissue_ids))
    per[: p["n_cells"] - per.sum()] += 1
    codes = np.repeat(np.arange(len(tissue_ids), dtype=np.int32), per)
    columns = {
        "tissue_id": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(tissue_ids)),
        "cell_id": pa.array(np.concatenate([np.arange(1, k + 1) for k in per]).astype(np.int64)),
        "cell_type": pa.DictionaryArray.from_arrays(
            pa.array(rng.integers(0, len(CELL_TYPES), codes.size).astype(np.int32)), pa.array(CELL_TYPES)
        ),
    }
    for name in markers:
        columns[name] = pa.array(rng.gamma(2.0, 1.0, codes.size).astype(np.float32))
    paths.metadata_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), paths.cells)
    return root


def _table_store(quick: bool, table: object) -> object:
    """A SpatialData store holding only ``table`` (its labels are not there), made once."""
    import spatialdata

    store = WORK / ("quick" if quick else "full") / f"{NAME}_table_only.zarr"
    if not (store / "zarr.json").is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the table annotates labels that this store does not hold
            spatialdata.SpatialData(tables={"cells": table}).write(store, overwrite=True)
    return store


def run(quick: bool) -> list[Result]:
    import spatialdata

    from spora_sd import open_cohort
    from spora_sd.convert.cell_table import build_cell_table

    p = SIZES[quick]
    cohort = open_cohort(_cohort(quick))
    tissue_ids = cohort.tissue_ids()
    columns = cohort.cell_columns

    def spora() -> object:
        return build_cell_table(cohort, tissue_ids=tissue_ids, modalities=["imc"], spatial=False)

    def baseline() -> object:
        return pq.read_table(cohort.paths.cells, columns=columns)

    store = _table_store(quick, spora())

    def anndata_read() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return spatialdata.read_zarr(store).tables["cells"]

    spora(), baseline(), anndata_read()  # warm-up: files in the OS cache, imports done
    best = {"spora": float("inf"), "pyarrow": float("inf"), "anndata": float("inf")}
    for _ in range(p["repeat"]):
        for name, func in (("spora", spora), ("pyarrow", baseline), ("anndata", anndata_read)):
            t, table = timed(func)
            best[name] = min(best[name], t)
            if name == "pyarrow":
                n_rows = table.num_rows  # type: ignore[attr-defined]
            del table
    details = {
        "cells": float(n_rows),
        "markers": float(p["n_markers"]),
        "spora s": best["spora"],
        "pyarrow s": best["pyarrow"],
        "sd.read_zarr s": best["anndata"],
    }
    return [
        Result(
            "table",
            best["spora"] / best["pyarrow"],
            "<=1.5",
            "cell table (AnnData) build time / pyarrow read_table time",
            details,
        ),
        Result(
            "table_vs_anndata",
            best["spora"] / best["anndata"],
            "<=1.0",
            "cell table (AnnData) build time / spatialdata.read_zarr of a store holding only that table",
            details,
        ),
    ]
