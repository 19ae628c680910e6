"""Cell and cell-type counts streamed from cells.parquet agree with reading the whole table."""

from __future__ import annotations

import shutil

import spora_sd
from spora_sd.qc.cells import cell_counts


def test_counts_match_the_table(small_cohort) -> None:
    cohort = spora_sd.open_cohort(small_cohort)
    table = cohort.cells(["cell_type"])
    counts = cell_counts(cohort, batch_rows=7)  # many small batches: the sums must still add up
    assert counts.totals.to_dict() == table.groupby("tissue_id").size().to_dict()
    expected = table.groupby(["tissue_id", "cell_type"]).size().unstack(fill_value=0)
    got = counts.types.loc[list(expected.index.astype(str)), list(expected.columns.astype(str))]
    assert (got.to_numpy() == expected.to_numpy()).all() and got.to_numpy().sum() == len(table)
    tissue = str(expected.index[0])
    fractions = dict(counts.fractions(tissue))
    assert abs(sum(fractions.values()) - 1) < 1e-9
    row = expected.loc[tissue]
    assert list(fractions) == [str(k) for k in row[row > 0].sort_values(ascending=False, kind="stable").index]


def test_without_cell_types_or_cells(small_cohort, tmp_path) -> None:
    cohort = spora_sd.open_cohort(small_cohort)
    counts = cell_counts(cohort, column="no_such_column")
    assert counts.types is None and counts.fractions(cohort.tissue_ids()[0]) == []
    copy = tmp_path / small_cohort.name
    shutil.copytree(small_cohort, copy)
    (copy / "metadata" / "cells.parquet").unlink()
    assert cell_counts(spora_sd.open_cohort(copy)) is None
