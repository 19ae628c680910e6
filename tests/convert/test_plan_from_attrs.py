"""Planning the write-back from the reverse map: the cell table's row order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import spora_sd
from spora_sd.convert.plan_from_attrs import _in_order, plan_from_reverse_map


def test_in_order_agrees_with_a_stable_lexsort() -> None:
    """The blockwise check says "in order" exactly when a lexsort would keep every row where it is."""
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 5, 40):
        for block in (1, 3, 1 << 20):
            for _ in range(50):
                ranks, ids = rng.integers(0, 3, n), rng.integers(0, 4, n)
                if rng.random() < 0.5:
                    order = np.lexsort((ids, ranks))
                    ranks, ids = ranks[order], ids[order]
                expected = bool(np.array_equal(np.lexsort((ids, ranks)), np.arange(n)))
                assert _in_order(ranks, ids, block) is expected


def test_shuffled_cell_rows_are_planned_in_cohort_order(small_cohort: Path) -> None:
    sdata = spora_sd.to_spatialdata(small_cohort)
    planned = plan_from_reverse_map(sdata, dataset="small2025cohort").cells_table
    cells = sdata.tables["cells"]
    shuffled = cells[np.random.default_rng(0).permutation(cells.n_obs)].copy()
    del sdata.tables["cells"]
    sdata.tables["cells"] = shuffled
    again = plan_from_reverse_map(sdata, dataset="small2025cohort").cells_table
    pd.testing.assert_frame_equal(again, planned)


def test_planning_leaves_the_cell_table_as_it_was(small_cohort: Path) -> None:
    """The planned cell table shares obs's and X's memory (no copy of every row): it must not write into them."""
    sdata = spora_sd.to_spatialdata(small_cohort)
    cells = sdata.tables["cells"]
    obs, x = cells.obs.copy(), cells.X.copy()
    planned = plan_from_reverse_map(sdata, dataset="other2025key").cells_table  # re-keyed: tissue ids renamed
    assert str(planned["tissue_id"].iloc[0]).startswith("other2025key_")
    pd.testing.assert_frame_equal(cells.obs, obs)
    np.testing.assert_array_equal(cells.X, x)
