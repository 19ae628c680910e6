"""The Parquet writer: tables are converted to Arrow one row group at a time, into the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spora_sd.io.tables import _write_parquet, read_table, write_table


def _whole(df: pd.DataFrame, target: Path, *, index: bool, rows: int | None = None) -> bytes:
    """The file the writer wrote before it streamed: the whole table as one Arrow copy."""
    pq.write_table(pa.Table.from_pandas(df, preserve_index=index), target, row_group_size=rows)
    return target.read_bytes()


def _mixed(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "tissue_id": pd.Categorical(rng.choice(["b", "a", "c"], n), categories=["c", "a", "b", "unused"]),
            "cell_id": np.arange(1, n + 1, dtype=np.int64),
            "area": rng.random(n).astype(np.float32),
            "label": [None if i % 4 == 0 else f"x{i}" for i in range(n)],  # None first: typed by the whole column
            "flag": rng.random(n) > 0.5,
        }
    )


@pytest.mark.parametrize("index", [False, True])
def test_streamed_row_groups_write_the_whole_tables_bytes(tmp_path: Path, index: bool) -> None:
    df = _mixed(10)
    if index:
        df.index = pd.Index([f"r{i}" for i in range(10)], name="row")
    _write_parquet(df, tmp_path / "streamed.parquet", index=index, rows=3)
    assert (tmp_path / "streamed.parquet").read_bytes() == _whole(df, tmp_path / "whole.parquet", index=index, rows=3)
    assert pq.ParquetFile(tmp_path / "streamed.parquet").metadata.num_row_groups == 4
    pd.testing.assert_frame_equal(pq.read_table(tmp_path / "streamed.parquet").to_pandas(), df)


def test_cells_table_is_written_as_before(small_cohort: Path, tmp_path: Path) -> None:
    """A real cell table, in row groups of 50 rows (the default is 1,048,576), and whole at the default."""
    cells = read_table(small_cohort / "metadata" / "cells.parquet")
    assert len(cells) > 100
    _write_parquet(cells, tmp_path / "streamed.parquet", index=False, rows=50)
    assert (tmp_path / "streamed.parquet").read_bytes() == _whole(
        cells, tmp_path / "whole.parquet", index=False, rows=50
    )
    write_table(cells, tmp_path / "cells.parquet", "cells", index=False, dataset="small2025cohort")
    assert (tmp_path / "cells.parquet").read_bytes() == _whole(cells, tmp_path / "default.parquet", index=False)
    empty = cells.iloc[:0]
    _write_parquet(empty, tmp_path / "empty.parquet", index=False)
    assert (tmp_path / "empty.parquet").read_bytes() == _whole(empty, tmp_path / "empty_whole.parquet", index=False)
