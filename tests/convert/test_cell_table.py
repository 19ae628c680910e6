"""The cell table's AnnData assembly (the table itself is tested through to_spatialdata)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from spora_sd.convert.cell_table import _obs_argument


@pytest.mark.parametrize("extra", [None, "obs_names", "row_names"])
def test_obs_names_are_set_without_anndatas_checks_and_columns_stay_columns(extra: str | None) -> None:
    obs = {"tissue_id": pd.Categorical(["a", "a", "b"]), "cell_id": np.array([1, 2, 1])}
    if extra is not None:  # a cells.parquet column with a name anndata would read as the index
        obs[extra] = np.array([7, 8, 9])
    names = pd.Index(["a__1", "a__2", "b__1"])
    made = AnnData(X=np.zeros((3, 1), np.float32), obs=_obs_argument(obs, names))
    expected = AnnData(X=np.zeros((3, 1), np.float32), obs=pd.DataFrame(obs, index=names))
    pd.testing.assert_frame_equal(made.obs, expected.obs)
    assert list(made.obs_names) == list(names) and list(made.obs.columns) == list(obs)


@pytest.mark.parametrize("layout", ["row_groups", "shuffled", "subset"])
def test_intensities_are_the_parquet_values_whatever_the_row_groups_and_order(small_cohort, tmp_path, layout) -> None:
    """X holds cells.parquet's values for each (tissue_id, cell_id), read by row group or whole."""
    import shutil

    import pyarrow.parquet as pq

    import spora_sd
    from spora_sd.convert.cell_table import build_cell_table

    root = shutil.copytree(small_cohort, tmp_path / small_cohort.name)
    cohort = spora_sd.open_cohort(root)
    source = pq.read_table(cohort.paths.cells)
    if layout == "shuffled":
        source = source.take(np.random.default_rng(0).permutation(source.num_rows))
    pq.write_table(source, cohort.paths.cells, row_group_size=7)  # row groups that split tissues
    cohort = spora_sd.open_cohort(root)
    tissue_ids = cohort.tissue_ids()[1:3] if layout == "subset" else cohort.tissue_ids()
    table = build_cell_table(cohort, tissue_ids=tissue_ids, modalities=["imc"], spatial=False)
    expected = source.to_pandas().astype({"tissue_id": str}).set_index(["tissue_id", "cell_id"])
    keys = list(zip(table.obs["tissue_id"].astype(str), table.obs["cell_id"], strict=True))
    stored = [c for c in table.var_names if c in expected.columns]
    assert stored and set(table.obs["tissue_id"]) == set(tissue_ids)
    np.testing.assert_array_equal(table[:, stored].X, expected.loc[keys, stored].to_numpy(np.float32))
    assert np.isnan(table[:, [c for c in table.var_names if c not in stored]].X).all()
