"""Cells per tissue and cell-type counts, streamed from ``metadata/cells.parquet`` in record batches.

A cohort's cell table can hold millions of rows (cords2024cancer: 6 million); only the tissue and
cell-type columns are read, one batch at a time, so memory grows with the number of tissues and cell
types, not with the number of cells.

Examples
--------
>>> import tempfile, pathlib, spora_sd
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10)
>>> counts = cell_counts(spora_sd.open_cohort(root))
>>> int(counts.totals.sum()) == len(spora_sd.open_cohort(root).cells(["cell_type"]))
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spora_sd.errors import CohortFormatError
from spora_sd.io.cohort import Cohort

__all__ = ["CellCounts", "cell_counts"]

logger = logging.getLogger(__name__)

BATCH_ROWS = 1 << 18


@dataclass
class CellCounts:
    """What the cell table says per tissue.

    Attributes
    ----------
    totals
        Number of cells per ``tissue_id``.
    types
        Cells per tissue (rows) and cell type (columns), or ``None`` without a cell-type column.
    column
        The cell-type column that ``types`` counts.
    """

    totals: pd.Series
    types: pd.DataFrame | None
    column: str | None

    def fractions(self, tissue_id: str) -> list[tuple[str, float]]:
        """``(cell type, fraction)`` of one tissue, largest first; empty when unknown."""
        if self.types is None or tissue_id not in self.types.index:
            return []
        row = self.types.loc[tissue_id]
        total = float(row.sum())
        if not total:
            return []
        return [(str(k), float(v) / total) for k, v in row.sort_values(ascending=False, kind="stable").items() if v > 0]


def cell_counts(cohort: Cohort, column: str = "cell_type", *, batch_rows: int = BATCH_ROWS) -> CellCounts | None:
    """Count cells (and cells of each type in ``column``, when the table has it) per tissue.

    The table is read ``batch_rows`` rows at a time.

    Returns ``None`` when the cohort has no cell table.

    Raises
    ------
    CohortFormatError
        ``table.unreadable``: the cell table cannot be read, or has no ``tissue_id`` column.
    """
    path = cohort.paths.cells
    if not path.is_file():
        return None
    present = cohort.cell_columns
    if "tissue_id" not in present:
        raise CohortFormatError(path, "table.column.missing", "column 'tissue_id' is missing")
    keys = ["tissue_id"] + ([column] if column in present else [])
    parts: list[pd.Series] = []
    try:
        for batch in pq.ParquetFile(path).iter_batches(columns=keys, batch_size=batch_rows):
            frame = batch.to_pandas()
            frame[keys] = frame[keys].astype("string").fillna("unlabelled")
            parts.append(frame.groupby(keys, observed=True).size())
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None
    if not parts:
        return CellCounts(pd.Series(dtype="int64"), None, None)
    counts = pd.concat(parts).groupby(level=list(range(len(keys)))).sum()
    if len(keys) == 1:
        return CellCounts(counts.astype("int64"), None, None)
    types = counts.unstack(fill_value=0).astype("int64")
    return CellCounts(types.sum(axis=1), types, column)
