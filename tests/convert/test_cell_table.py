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
