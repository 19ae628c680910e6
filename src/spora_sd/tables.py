"""Read and write the cohort's Parquet tables.

Writers check a table against its JSON Schema (``schemas/<kind>.schema.json``) before anything
touches the disk, then write atomically. Readers use pyarrow column selection and filters so that
only what is asked for is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .errors import CohortFormatError

__all__ = ["read_table", "write_table"]


def write_table(
    df: pd.DataFrame,
    path: str | Path,
    kind: str,
    *,
    index: bool | None = None,
    overwrite: bool = True,
    **context: Any,
) -> Path:
    """Check ``df`` against the schema of ``kind``, then write it as Parquet atomically.

    Parameters
    ----------
    df
        The table.
    path
        Target ``.parquet`` file.
    kind
        Schema kind, one of :data:`spora_sd.table_schema.SCHEMA_KINDS`.
    index
        Whether to store the pandas index (``None``: only when it is named, as ``tissue_id`` is for
        ``channels_per_tissue``).
    context
        Passed to :func:`spora_sd.table_schema.check_table` (``channels=``, ``dataset=``).

    Examples
    --------
    >>> import pandas as pd, tempfile, pathlib
    >>> ch = pd.DataFrame({"channel_name": ["CD3E"], "qc_pass": [True], "uniprot_id": ["P07766"],
    ...                    "is_nuclear_marker": [False]})
    >>> _ = write_table(ch, pathlib.Path(tempfile.mkdtemp()) / "channels.parquet", "channels")
    """
    from .table_schema import ensure_valid_table

    path = Path(path)
    ensure_valid_table(df, kind, path, **context)
    if index is None:
        index = any(name is not None for name in df.index.names)
    table = pa.Table.from_pandas(df, preserve_index=index)
    with atomic_path(path, overwrite=overwrite) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table(
    path: str | Path,
    *,
    columns: Sequence[str] | None = None,
    filters: Any = None,
) -> pd.DataFrame:
    """Read a Parquet table (optionally some columns, optionally filtered), naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such table")
    try:
        table = pq.read_table(path, columns=list(columns) if columns is not None else None, filters=filters)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None
    return table.to_pandas()


def parquet_columns(path: str | Path) -> list[str]:
    """Column names of a Parquet file, from its footer only."""
    path = Path(path)
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None


def parquet_num_rows(path: str | Path) -> int:
    """Number of rows of a Parquet file, from its footer only."""
    path = Path(path)
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None
