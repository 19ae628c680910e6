"""Read and write the cohort's Parquet tables: the one Parquet reader and writer of the package.

Writers check a table against its JSON Schema (:mod:`spora_sd.layout.schemas`) before anything
touches the disk, then write atomically. Readers use pyarrow column selection and filters so that
only what is asked for is read; :func:`read_table` raises on a broken file, :func:`read_table_checked`
(the validator's reader) collects every problem instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spora_sd.errors import CohortFormatError, CohortNotFoundError, SporaError
from spora_sd.io.atomic import atomic_path
from spora_sd.io.location import as_path
from spora_sd.io.remote import cached_size, is_dir, is_file, is_local, remote_errors, retrying
from spora_sd.layout.schemas import check_table, ensure_valid_table
from spora_sd.layout.schemas.loading import cached_schema
from spora_sd.report import Problem

__all__ = [
    "open_parquet",
    "parquet_columns",
    "parquet_num_rows",
    "read_arrow_table",
    "read_row_groups",
    "read_table",
    "read_table_checked",
    "write_table",
]


#: Rows per row group of the tables written here: pyarrow's default, at most 1,048,576 rows per group.
ROW_GROUP_ROWS = 1 << 20

#: A remote table at most this large (by its folder's cached listing) is read in one request, not two.
WHOLE_TABLE_BYTES = 4 << 20


def _source(path: Any, *, whole: bool = False) -> tuple[Any, Any]:
    """``(path, filesystem)`` for pyarrow: a local path as it is, a remote one through pyarrow's filesystem layer.

    A remote table is read through :class:`pyarrow.fs.PyFileSystem` over the path's fsspec filesystem
    (the same credentials, retries and connection pool as the images): pyarrow reads the footer, then
    only the column chunks (and row groups, with filters) it needs, as range requests. With ``whole``,
    a small table (:data:`WHOLE_TABLE_BYTES`, size known from a listing) is one file object fetched
    in one request: over a network, the footer-then-columns reads are two round trips in sequence.
    """
    path = as_path(path)
    if is_local(path):
        return path, None
    import pyarrow.fs as pafs

    size = cached_size(path) if whole else None
    if size is not None and size <= WHOLE_TABLE_BYTES:
        return path.fs.open(path.path, "rb", cache_type="all", size=size), None

    return path.path, pafs.PyFileSystem(pafs.FSSpecHandler(path.fs))


def open_parquet(path: Any) -> pq.ParquetFile:
    """A :class:`pyarrow.parquet.ParquetFile` over a local or remote file (reads its footer only)."""
    return _parquet_file(path)


def _parquet_file(path: Any) -> pq.ParquetFile:
    source, filesystem = _source(path)
    return pq.ParquetFile(source if filesystem is None else filesystem.open_input_file(source))


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
    with atomic_path(path, overwrite=overwrite) as tmp:
        _write_parquet(df, tmp, index=index)
    return path


def _write_parquet(df: pd.DataFrame, target: Path, *, index: bool, rows: int = ROW_GROUP_ROWS) -> None:
    """``df`` as Parquet, converted to Arrow one row group at a time.

    The file is the one ``pq.write_table(pa.Table.from_pandas(df, preserve_index=index), target,
    row_group_size=rows)`` writes (same schema, pandas metadata, row groups and bytes), but only one
    row group of ``rows`` rows is ever an Arrow copy, not the whole table (at 6 M cells, the cell
    table's Arrow copy was 140 MB next to the DataFrame it came from).

    Examples
    --------
    >>> import tempfile, pathlib, pyarrow.parquet as pq
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "t.parquet"
    >>> _write_parquet(pd.DataFrame({"a": range(5)}), target, index=False, rows=2)
    >>> pq.ParquetFile(target).metadata.num_row_groups
    3
    """
    schema = pa.Schema.from_pandas(df, preserve_index=index)  # one column at a time, as from_pandas types them
    with pq.ParquetWriter(target, schema) as writer:
        for start in range(0, max(len(df), 1), rows):  # an empty table: one empty row group, as write_table
            part = pa.Table.from_pandas(df.iloc[start : start + rows], schema=schema, preserve_index=index)
            writer.write_table(part, row_group_size=rows)
            del part


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
    path = as_path(path)
    if not is_file(path):
        raise CohortNotFoundError(f"{path}: no such table")
    table = read_arrow_table(path, columns=columns, filters=filters)
    try:
        return table.to_pandas()
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None


def read_arrow_table(path: Any, *, columns: Sequence[str] | None = None, filters: Any = None) -> pa.Table:
    """A Parquet table as a :class:`pyarrow.Table` (local or remote), naming the file on failure.

    Raises
    ------
    CohortNotFoundError
        The file is missing (remote: ``no such object``).
    CohortFormatError
        ``table.unreadable``.
    RemoteAccessError
        The server cannot be read (see :mod:`spora_sd.io.remote`).
    """

    def read() -> pa.Table:
        source, filesystem = _source(path, whole=True)
        try:
            return pq.read_table(
                source,
                columns=list(columns) if columns is not None else None,
                filters=filters,
                filesystem=filesystem,
            )
        finally:
            if hasattr(source, "close"):  # the file object of a small remote table
                source.close()

    with _read_errors(path), remote_errors(path):
        return retrying(read, path)


@contextlib.contextmanager
def _read_errors(path: Any) -> Iterator[None]:
    """A failed Parquet read as :class:`CohortNotFoundError` or ``table.unreadable``, naming the file."""
    try:
        yield
    except SporaError:
        raise
    except FileNotFoundError:
        raise CohortNotFoundError(f"{path}: no such table") from None
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None


def read_row_groups(path: Any, *, columns: Sequence[str]) -> Iterator[pa.Table]:
    """The row groups of a Parquet table (local or remote), one :class:`pyarrow.Table` at a time.

    For a reader that copies the values where they go (the cell table's ``X``): it holds one row
    group in Arrow memory, not the whole table, and pyarrow's allocator reuses the same pages for
    each row group. A local file is memory-mapped one row group at a time: pyarrow then decodes from
    the page cache instead of first reading each column chunk into fresh memory (0.3 to 0.6 s less
    kernel time for the cell table's 1 GB of intensities), and only that row group's pages are
    mapped (the whole file mapped would count in the RSS). Errors are those of :func:`read_arrow_table`.

    Examples
    --------
    >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = tempfile.mkdtemp() + "/t.parquet"
    >>> pq.write_table(pa.table({"a": range(5), "b": range(5)}), path, row_group_size=2)
    >>> [t.num_rows for t in read_row_groups(path, columns=["b"])]
    [2, 2, 1]
    """
    with _read_errors(path), remote_errors(path):
        file = _parquet_file(path)
        for i in range(file.metadata.num_row_groups):
            yield _read_row_group(path, file, i, list(columns))


def _read_row_group(path: Any, file: pq.ParquetFile, index: int, columns: list[str]) -> pa.Table:
    """Row group ``index`` of ``file``; a local file is memory-mapped for this row group only."""
    source, filesystem = _source(path)
    if filesystem is not None:
        return file.read_row_group(index, columns=columns)
    with pq.ParquetFile(source, memory_map=True, metadata=file.metadata) as mapped:
        return mapped.read_row_group(index, columns=columns)


def parquet_columns(path: str | Path) -> list[str]:
    """Column names of a Parquet file, from its footer only."""
    path = as_path(path)
    try:
        with remote_errors(path):
            return list(retrying(lambda: _parquet_file(path).schema_arrow, path).names)
    except SporaError:
        raise
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise CohortFormatError(path, "table.unreadable", f"not a readable Parquet file: {exc}") from None


def parquet_num_rows(path: str | Path) -> int:
    """Number of rows of a Parquet file, from its footer only."""
    path = as_path(path)
    try:
        with remote_errors(path):
            return int(retrying(lambda: _parquet_file(path).metadata.num_rows, path))
    except SporaError:
        raise
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
    path = as_path(path)

    def unreadable(why: str) -> tuple[None, list[Problem]]:
        return None, [Problem(str(path), "table.unreadable", f"cannot read the {kind} table: {why}")]

    if is_dir(path) and not is_file(path):
        return unreadable("it is a folder; the layout stores every table as one Parquet file")
    try:
        with remote_errors(path), _parquet_file(path) as parquet:
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
    except SporaError as exc:
        return unreadable(str(exc))
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
