"""The per-tissue spatial graph equals squidpy's own ``library_key`` result, key for key and entry for entry."""

from __future__ import annotations

import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
import squidpy as sq
from scipy.sparse import csr_matrix

from spora_sd.analysis import spatial_neighbors
from spora_sd.errors import InvalidArgumentError

# tissue -> cells; "tiny" has 2 cells (radius graphs only: squidpy's knn and Delaunay need more)
SIZES = {"t_a": 60, "t_b": 45, "t_c": 7, "tiny": 2}


def _cells(sizes: dict[str, int], *, interleaved: bool, seed: int = 0) -> anndata.AnnData:
    """Generic coordinates (float, µm-like), one tissue per category; rows shuffled when ``interleaved``."""
    rng = np.random.default_rng(seed)
    tissue = np.repeat(list(sizes), list(sizes.values()))
    xy = rng.random((tissue.size, 2)) * 100
    if interleaved:
        order = rng.permutation(tissue.size)
        tissue, xy = tissue[order], xy[order]
    # categories in an order that is not the rows' order, and one without cells
    obs = pd.DataFrame(
        {"tissue_id": pd.Categorical(tissue, categories=["unused", *sorted(sizes, reverse=True)])},
        index=[f"c{i}" for i in range(tissue.size)],
    )
    return anndata.AnnData(obs=obs, obsm={"spatial": xy})


def _squidpy(cells: anndata.AnnData, **kwargs: object) -> anndata.AnnData:
    """squidpy's own library loop, on a copy whose library column has no unused category (squidpy fails on it)."""
    theirs = cells.copy()
    theirs.obs["tissue_id"] = theirs.obs["tissue_id"].cat.remove_unused_categories()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sq.gr.spatial_neighbors(theirs, library_key="tissue_id", **kwargs)
    return theirs


def _assert_same_matrix(ours: csr_matrix, theirs: csr_matrix) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert ours.indptr.dtype == ours.indices.dtype == np.int32  # built in scipy's width: no conversion copy
    a, b = csr_matrix(ours).sorted_indices(), csr_matrix(theirs).sorted_indices()
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("interleaved", [False, True], ids=["grouped", "interleaved"])
@pytest.mark.parametrize(
    ("sizes", "kwargs"),
    [
        ({k: v for k, v in SIZES.items() if k != "tiny"}, {"coord_type": "generic", "delaunay": True}),
        ({k: v for k, v in SIZES.items() if k != "tiny"}, {"coord_type": "generic", "n_neighs": 5}),
        (SIZES, {"coord_type": "generic", "radius": 20.0}),
        (SIZES, {"coord_type": "generic", "radius": (5.0, 20.0), "transform": "cosine"}),
        ({k: v for k, v in SIZES.items() if k != "tiny"}, {"delaunay": True, "percentile": 90.0, "set_diag": True}),
    ],
    ids=["delaunay", "knn", "radius", "radius_interval_cosine", "delaunay_percentile"],
)
def test_equals_squidpys_library_key_result(sizes: dict[str, int], kwargs: dict, interleaved: bool) -> None:
    cells = _cells(sizes, interleaved=interleaved)
    theirs = _squidpy(cells, **kwargs)
    spatial_neighbors(cells, "tissue_id", **kwargs)
    assert set(cells.obsp) == set(theirs.obsp) == {"spatial_connectivities", "spatial_distances"}
    assert cells.uns.keys() == theirs.uns.keys()
    assert cells.uns["spatial_neighbors"] == theirs.uns["spatial_neighbors"]
    for key in cells.obsp:
        _assert_same_matrix(cells.obsp[key], theirs.obsp[key])


def test_copy_and_key_added_as_squidpy() -> None:
    cells = _cells({"t_a": 30, "t_b": 20}, interleaved=True)
    cells.obs["tissue_id"] = cells.obs["tissue_id"].cat.remove_unused_categories()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        theirs = sq.gr.spatial_neighbors(cells, library_key="tissue_id", n_neighs=4, copy=True)
    ours = spatial_neighbors(cells, n_neighs=4, copy=True)
    assert type(ours) is type(theirs)
    _assert_same_matrix(ours.connectivities, theirs.connectivities)
    _assert_same_matrix(ours.distances, theirs.distances)
    assert not cells.obsp and "spatial_neighbors" not in cells.uns  # copy: nothing written
    spatial_neighbors(cells, key_added="graph", n_neighs=4)
    assert set(cells.obsp) == {"graph_connectivities", "graph_distances"}
    assert cells.uns["graph_neighbors"]["connectivities_key"] == "graph_connectivities"


def test_a_library_column_of_strings_is_grouped_as_a_categorical() -> None:
    cells = _cells({"t_a": 30, "t_b": 20}, interleaved=True)
    expected = spatial_neighbors(cells, delaunay=True, copy=True)
    cells.obs["tissue_id"] = cells.obs["tissue_id"].astype(str)
    got = spatial_neighbors(cells, delaunay=True, copy=True)
    _assert_same_matrix(got.connectivities, expected.connectivities)


def test_errors_name_the_tissue_and_the_rule() -> None:
    cells = _cells(SIZES, interleaved=False)
    with pytest.raises(InvalidArgumentError, match=r"tissue 'tiny' \(2 cells\)"):
        spatial_neighbors(cells, delaunay=True)
    with pytest.raises(InvalidArgumentError, match="no column 'sample'"):
        spatial_neighbors(cells, "sample")
    with pytest.raises(InvalidArgumentError, match="n_jobs"):
        spatial_neighbors(cells, radius=5.0, n_jobs=2)
    cells.obs.loc["c0", "tissue_id"] = np.nan
    with pytest.raises(InvalidArgumentError, match="1 cell"):
        spatial_neighbors(cells, radius=5.0)


def test_on_a_dask_client_one_task_per_tissue_same_graph() -> None:
    from distributed import Client, LocalCluster, get_task_stream

    cells = _cells({k: v for k, v in SIZES.items() if k != "tiny"}, interleaved=True)
    expected = spatial_neighbors(cells, delaunay=True, copy=True)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client, get_task_stream(client) as tasks:
            got = spatial_neighbors(cells, delaunay=True, copy=True)
    assert sum(t["key"].startswith("_tissue_graph") for t in tasks.data) == 3
    _assert_same_matrix(got.connectivities, expected.connectivities)
    _assert_same_matrix(got.distances, expected.distances)
