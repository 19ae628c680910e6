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


@pytest.mark.parametrize("ids", ["labels", "sparse", "negative"])
def test_obs_names_over_several_slices_match_the_tissue_and_cell_ids(ids: str) -> None:
    """Names made in slices by two threads, in pandas' default string dtype (object or "str")."""
    from concurrent.futures import ThreadPoolExecutor

    from spora_sd.convert.cell_table import NAME_SLICE, _submit_obs_names

    n = NAME_SLICE * 2 + 5  # three slices, the last one short
    codes = np.repeat(np.arange(3, dtype=np.int32), [NAME_SLICE, NAME_SLICE, 5])
    cell_ids = {
        "labels": np.concatenate([np.arange(1, NAME_SLICE + 1)] * 2 + [np.arange(1, 6)]),  # table of "0".."max"
        "sparse": np.arange(n, dtype=np.int64) * 1_000_003,  # too large for a table: formatted one by one
        "negative": np.arange(n, dtype=np.int64) - 3,
    }[ids]
    order = ["t_a", "t_b", "t_c"]
    with ThreadPoolExecutor(2) as pool:
        names = _submit_obs_names(pool, codes, order, cell_ids)()
    expected = pd.Index([f"{order[c]}__{i}" for c, i in zip(codes, cell_ids, strict=True)])
    assert names.dtype == expected.dtype  # object in pandas 2, "str" in pandas 3, as anndata reads them
    pd.testing.assert_index_equal(names, expected, exact=True)


def test_string_columns_become_categoricals_with_sorted_used_categories() -> None:
    import pyarrow as pa

    from spora_sd.convert.cell_table import _categorical

    unsorted = pa.DictionaryArray.from_arrays(pa.array([0, None, 2, 2, None, 0], pa.int32()), pa.array(["z", "y", "a"]))
    column = pa.chunked_array(
        [unsorted, pa.DictionaryArray.from_arrays(pa.array([1], pa.int32()), pa.array(["z", "a"]))]
    )
    made = _categorical(column)
    assert list(made.categories) == ["a", "z"]  # "y" is not used
    assert list(pd.Series(made).astype(object).where(pd.notna(made), None)) == ["z", None, "a", "a", None, "z", "a"]
    ordered = _categorical(pa.chunked_array([pa.array(["a", "b", "a"])]))  # sorted and all used: codes kept
    assert list(ordered.categories) == ["a", "b"] and list(ordered.codes) == [0, 1, 0]
