"""Read and write the cohort's Parquet tables: the one Parquet reader and writer of the package.

Writers check a table against its JSON Schema (:mod:`spora_sd.layout.schemas`) before anything
touches the disk, then write atomically. Readers use pyarrow column selection and filters so that
only what is asked for is read; :func:`read_table` raises on a broken file, :func:`read_table_checked`
(the validator's reader) collects every problem instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spora_sd.errors import CohortFormatError, CohortNotFoundError
from spora_sd.io.atomic import atomic_path
from spora_sd.layout.schemas import check_table, ensure_valid_table
from spora_sd.layout.schemas.loading import cached_schema
from spora_sd.report import Problem

__all__ = ["parquet_columns", "parquet_num_rows", "read_table", "read_table_checked", "write_table"]


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
        Schema kind, one of :data:`spora_sd.layout.schemas.SCHEMA_KINDS`.
    index
        Whether to store the pandas index (``None``: only when it is named, as ``tissue_id`` is for
        ``channels_per_tissue``).
    context
        Passed to :func:`spora_sd.layout.schemas.check_table` (``channels=``, ``dataset=``).

    Examples
    --------
    >>> import pandas as pd, tempfile, pathlib
    >>> ch = pd.DataFrame({"channel_name": ["CD3E"], "qc_pass": [True], "uniprot_id": ["P07766"],
    ...                    "is_nuclear_marker": [False]})
    >>> _ = write_table(ch, pathlib.Path(tempfile.mkdtemp()) / "channels.parquet", "channels")
    """
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
    """Read a Parquet table (optionally some columns, optionally filtered), naming the file on failure.

    Raises
    ------
    CohortNotFoundError
        If the file is missing.
    CohortFormatError
        ``table.unreadable``: not one readable Parquet file.

    Examples
    --------
    >>> read_table("/nonexistent/tissues.parquet")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    spora_sd.errors.CohortNotFoundError: /nonexistent/tissues.parquet: no such table
    """
    path = Path(path)
    if not path.is_file():
        raise CohortNotFoundError(f"{path}: no such table")
    try:
        table = pq.read_table(path, columns=list(columns) if columns is not None else None, filters=filters)
        return table.to_pandas()
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None


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


def read_table_checked(
    path: str | Path,
    kind: str,
    *,
    columns: Sequence[str] | None = None,
    channels: Sequence[str] | None = None,
    dataset: str | None = None,
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read one Parquet table of a cohort and check it, never raising on bad input.

    Parameters
    ----------
    path
        The ``.parquet`` file.
    kind
        One of :data:`spora_sd.layout.schemas.SCHEMA_KINDS`.
    columns
        Read only these columns (plus the table's required and key columns, which the checks need), e.g. to
        keep a large ``cells.parquet`` fast. Column names and dtypes of the whole file are still checked
        from its footer; values only of what was read.
    channels, dataset
        As for :func:`spora_sd.layout.schemas.check_table`.

    Returns
    -------
    tuple
        The table as a DataFrame (None if the file cannot be read) and the list of problems. An unreadable
        file (missing, a folder, truncated, not Parquet) is one ``table.unreadable`` problem.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "tissues.parquet"
    >>> _ = bad.write_text("tissue_id,modality\\n")
    >>> df, problems = read_table_checked(bad, "tissues")
    >>> df is None, [p.rule for p in problems]
    (True, ['table.unreadable'])
    """
    schema = cached_schema(kind)
    path = Path(path)

    def unreadable(why: str) -> tuple[None, list[Problem]]:
        return None, [Problem(str(path), "table.unreadable", f"cannot read the {kind} table: {why}")]

    if path.is_dir():
        return unreadable("it is a folder; the layout stores every table as one Parquet file")
    try:
        with pq.ParquetFile(path) as parquet:
            file_schema = parquet.schema_arrow
            load = None
            if columns is not None:
                needed = {
                    *columns,
                    *schema.get("required", []),
                    *(c for key in schema.get("x-unique", []) for c in key),
                }
                load = [name for name in file_schema.names if name in needed]
            table = parquet.read(columns=load, use_pandas_metadata=True)
    except (OSError, pa.ArrowException, ValueError, TypeError) as exc:
        return unreadable(f"{type(exc).__name__}: {exc}")
    problems = check_table(table, kind, path, channels=channels, dataset=dataset, file_schema=file_schema)
    try:
        df = table.to_pandas(split_blocks=True)
    except (pa.ArrowException, ValueError, TypeError, KeyError) as exc:
        problems.append(
            Problem(
                str(path),
                "table.unreadable",
                f"cannot convert the {kind} table to pandas (corrupt pandas metadata?): {exc}",
            )
        )
        return None, problems
    return df, problems
