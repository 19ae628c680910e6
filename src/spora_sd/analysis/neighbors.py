"""squidpy's spatial graph of every tissue, in the memory of the outputs plus one tissue.

``squidpy.gr.spatial_neighbors(adata, library_key="tissue_id")`` finds each library's rows with
``np.where`` over all cells (time: cells x libraries), keeps every library's graph, then assembles
them with ``scipy.sparse.block_diag``: about 2.6 GB over its input for 5.9 M cells in 2,000 tissues,
whose two output matrices take 0.72 GB. :func:`spatial_neighbors` gives the same result:

- the rows are grouped by tissue once, with a stable sort (no sort and no copy when each tissue's
  rows are already contiguous, as in the cell table of :func:`spora_sd.to_spatialdata`);
- squidpy builds each tissue's graph from a small AnnData that holds only that tissue's coordinates,
  with the same parameters (:func:`squidpy.gr.spatial_neighbors`, so every mode and option of it);
- each tissue's connectivities and distances are copied straight into the CSR arrays of the whole
  table, allocated once, and then dropped.

The tissues run through :func:`spora_sd.stats.parallel.imap_tissues`: one after the other, or on the
active ``dask.distributed`` client.

Examples
--------
>>> import anndata, numpy as np, pandas as pd
>>> xy = np.array([[0, 0], [1, 0], [0, 1], [5, 5], [6, 5], [5, 6]], dtype=float)
>>> cells = anndata.AnnData(obs=pd.DataFrame({"tissue_id": pd.Categorical(list("aaabbb"))}), obsm={"spatial": xy})
>>> spatial_neighbors(cells, coord_type="generic", delaunay=True)
>>> cells.obsp["spatial_connectivities"].toarray().astype(int)
array([[0, 1, 1, 0, 0, 0],
       [1, 0, 1, 0, 0, 0],
       [1, 1, 0, 0, 0, 0],
       [0, 0, 0, 0, 1, 1],
       [0, 0, 0, 1, 0, 1],
       [0, 0, 0, 1, 1, 0]])
>>> cells.uns["spatial_neighbors"]["params"]
{'coord_type': 'generic', 'radius': None, 'transform': None}
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spora_sd.errors import InvalidArgumentError
from spora_sd.io.memory import release_free_memory
from spora_sd.stats.parallel import imap_tissues

__all__ = ["spatial_neighbors"]

logger = logging.getLogger(__name__)

#: squidpy's key of the coordinates (``obsm``) and of Visium's grid metadata (``uns``).
_SPATIAL = "spatial"
#: squidpy arguments that make no sense here: the tissues' parallelism is ours, and the input an AnnData.
_NOT_PASSED = frozenset({"n_jobs", "elements_to_coordinate_systems", "table_key"})
#: Index entries reserved per cell before the first tissue tells the graph's density (virtual
#: memory: pages that are never written are never resident).
_MIN_ENTRIES_PER_CELL = 16


@dataclass(frozen=True)
class _Tissue:
    """One tissue's work: its name (for errors), its coordinates and squidpy's parameters."""

    name: str
    coords: np.ndarray
    params: Mapping[str, Any]


def _tissue_graph(tissue: _Tissue) -> tuple[Any, Any, dict[str, Any]]:
    """squidpy's connectivities, distances and ``params`` of one tissue."""
    import squidpy as sq
    from anndata import AnnData

    piece = AnnData(obsm={_SPATIAL: tissue.coords})
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Calling `spatial_neighbors` is deprecated", FutureWarning)
            sq.gr.spatial_neighbors(piece, spatial_key=_SPATIAL, key_added=_SPATIAL, **tissue.params)
    except Exception as err:
        raise InvalidArgumentError(
            f"spatial_neighbors: squidpy could not build the graph of tissue {tissue.name!r} "
            f"({len(tissue.coords)} cells) with {dict(tissue.params)}: {err}"
        ) from err
    return (
        piece.obsp[f"{_SPATIAL}_connectivities"],
        piece.obsp[f"{_SPATIAL}_distances"],
        piece.uns[f"{_SPATIAL}_neighbors"]["params"],
    )


def _index_dtype(entries: int) -> type[np.integer]:
    """The width of CSR offsets up to ``entries``: int32 while they fit, as scipy picks."""
    return np.int32 if entries < 2**31 else np.int64


class _CSRStream:
    """The CSR arrays of a square matrix, filled block by block down its rows.

    ``indices`` and ``data`` are reserved for an estimate of the entries (virtual memory until
    written), grown if it was short, and trimmed in place at the end.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        # int32 row offsets while the entries fit (scipy's own width): no int64 copy to convert at the end
        self.indptr = np.zeros(n + 1, dtype=np.int32)
        self.indices = np.empty(0, dtype=np.int32 if n < 2**31 else np.int64)
        self.data: np.ndarray | None = None
        self.rows = 0
        self.nnz = 0

    def _reserve(self, entries: int, rows: int, dtype: np.dtype) -> None:
        if self.data is None:
            per_cell = max(_MIN_ENTRIES_PER_CELL, 2 * -(-entries // max(rows, 1)))
            self.indices = np.empty(per_cell * self.n, dtype=self.indices.dtype)
            self.data = np.empty(per_cell * self.n, dtype=dtype)
        need = self.nnz + entries
        if need > self.data.size:  # a copy: the first tissues were sparser than the others
            size = max(need, 2 * self.data.size)
            self.indices.resize(size, refcheck=False)
            self.data.resize(size, refcheck=False)
        self.indptr = self.indptr.astype(_index_dtype(self.data.size), copy=False)  # wide enough for them

    def append(self, piece: Any, columns: np.ndarray | int) -> None:
        """Add the rows of ``piece`` (a CSR block); its column ``j`` becomes ``columns[j]`` (or ``columns + j``)."""
        rows, entries = piece.shape[0], piece.nnz
        self._reserve(entries, rows, piece.data.dtype)
        assert self.data is not None
        end = self.nnz + entries
        self.indptr[self.rows + 1 : self.rows + rows + 1] = self.nnz + piece.indptr[1:]
        local = piece.indices
        self.indices[self.nnz : end] = local + columns if isinstance(columns, int) else columns[local]
        self.data[self.nnz : end] = piece.data
        self.rows += rows
        self.nnz = end

    def matrix(self) -> Any:
        """The CSR matrix; the arrays are trimmed in place (no copy) and the stream is emptied."""
        from scipy.sparse import csr_matrix

        data = self.data if self.data is not None else np.empty(0, dtype=np.float64)
        indices = self.indices
        indices.resize(self.nnz, refcheck=False)
        data.resize(self.nnz, refcheck=False)
        # one width for both, as scipy keeps them (it would copy both to int64 otherwise)
        indptr = self.indptr.astype(_index_dtype(self.nnz) if indices.dtype == np.int32 else np.int64, copy=False)
        self.indptr = self.indices = np.empty(0, dtype=np.int64)
        self.data = None
        return csr_matrix((data, indices, indptr), shape=(self.n, self.n), copy=False)


def _library_codes(adata: Any, library_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's library code and the library names, from a categorical (or any) ``obs`` column."""
    if library_key not in adata.obs:
        raise InvalidArgumentError(
            f"spatial_neighbors: adata.obs has no column {library_key!r} (library_key); columns: {list(adata.obs)}"
        )
    column = adata.obs[library_key]
    values = column.array if isinstance(column.dtype, pd.CategoricalDtype) else pd.Categorical(column)
    codes = np.asarray(values.codes)
    if codes.size and codes.min() < 0:
        raise InvalidArgumentError(
            f"spatial_neighbors: {int((codes < 0).sum())} cell(s) have no {library_key!r} (missing values); "
            "every cell must belong to a library"
        )
    return codes, np.asarray(values.categories)


def _group(codes: np.ndarray, n_libraries: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The row order that groups the libraries, their bounds in it, and the libraries in that order.

    Libraries come in the order of their first cell, so rows that are already grouped (in any library
    order) need no reordering: the order is then ``None``. Libraries without cells are left out.
    """
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if codes.size else np.empty(0, np.int64)
    run_codes = codes[starts]
    present, first_run = np.unique(run_codes, return_index=True)
    libraries = present[np.argsort(first_run, kind="stable")]  # in the order of their first cell
    rank = np.zeros(n_libraries, dtype=np.int64)
    rank[libraries] = np.arange(libraries.size)
    counts = np.bincount(codes, minlength=n_libraries)[libraries]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    if libraries.size == starts.size:  # one run per library: grouped already
        return None, bounds, libraries
    return np.argsort(rank[codes], kind="stable"), bounds, libraries


@contextlib.contextmanager
def _quiet_squidpy() -> Iterator[None]:
    """squidpy logs three INFO lines per call; per tissue, that is thousands of lines."""
    squidpy_logger = logging.getLogger("spatialdata._logging")  # squidpy logs through spatialdata's logger
    level = squidpy_logger.level
    squidpy_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        squidpy_logger.setLevel(level)


def spatial_neighbors(
    adata: Any,
    library_key: str = "tissue_id",
    *,
    spatial_key: str = _SPATIAL,
    key_added: str = _SPATIAL,
    copy: bool = False,
    progress: bool = False,
    **squidpy_kwargs: Any,
) -> Any:
    """The spatial graph of every tissue: ``squidpy.gr.spatial_neighbors`` per library, at scale.

    The result (keys, matrices, ``uns[f"{key_added}_neighbors"]["params"]``) equals
    ``squidpy.gr.spatial_neighbors(adata, library_key=library_key, ...)``; the memory over the input is
    the two output matrices plus one tissue (and one copy of the coordinates when the tissues' rows
    are interleaved), where squidpy's own library loop needs several times its outputs. Before it
    allocates them it gives the process's free memory back to the system
    (:func:`spora_sd.io.memory.release_free_memory`), so that what earlier readers freed does not add
    to its peak.

    Parameters
    ----------
    adata
        An AnnData with the coordinates in ``obsm[spatial_key]`` and the library in ``obs[library_key]``,
        e.g. the cell table ``sdata.tables["cells"]`` of :func:`spora_sd.to_spatialdata`.
    library_key
        The ``obs`` column whose values (one graph each) are the tissues. Categorical or not; libraries
        without cells are left out (squidpy fails on them).
    spatial_key, key_added
        As in squidpy: where the coordinates are, and the prefix of the keys written.
    copy
        Return squidpy's ``SpatialNeighborsResult(connectivities, distances)`` instead of writing
        ``obsp[f"{key_added}_connectivities"]``, ``obsp[f"{key_added}_distances"]`` and
        ``uns[f"{key_added}_neighbors"]``.
    progress
        Show a progress bar over the tissues on stderr.
    **squidpy_kwargs
        The graph's parameters, passed to :func:`squidpy.gr.spatial_neighbors` for each tissue:
        ``coord_type``, ``n_neighs``, ``radius``, ``delaunay``, ``n_rings``, ``percentile``,
        ``transform``, ``set_diag``. ``coord_type=None`` resolves on ``adata`` as squidpy does
        (``"grid"`` when ``adata.uns`` holds ``"spatial"``, else ``"generic"``).

    Returns
    -------
    squidpy.gr.SpatialNeighborsResult or None
        The connectivities and distances when ``copy=True``, else ``None`` (``adata`` is written).

    Raises
    ------
    InvalidArgumentError
        ``library_key`` is not a column, a cell has no library, an argument is not a graph parameter
        (``n_jobs``, ``table_key``, ``elements_to_coordinate_systems``), or squidpy cannot build a
        tissue's graph (e.g. fewer cells than ``n_neighs``, or fewer than 3 cells with ``delaunay``):
        the message names the tissue and squidpy's error.

    Examples
    --------
    >>> import anndata, numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> tissue = pd.Categorical(["t1"] * 50 + ["t2"] * 30 + ["t1"] * 20)  # rows of t1 on both sides of t2
    >>> cells = anndata.AnnData(obs=pd.DataFrame({"tissue_id": tissue}), obsm={"spatial": rng.random((100, 2))})
    >>> result = spatial_neighbors(cells, coord_type="generic", n_neighs=6, copy=True)
    >>> result.connectivities.shape, result.connectivities.nnz  # 6 neighbours per cell
    ((100, 100), 600)
    >>> bool(result.connectivities[:50, 50:80].nnz == 0)  # no edge between tissues
    True
    """
    from squidpy.gr import SpatialNeighborsResult

    bad = sorted(_NOT_PASSED & set(squidpy_kwargs))
    if bad:
        raise InvalidArgumentError(
            f"spatial_neighbors: {bad} are not graph parameters (the tissues run through spora_sd.stats.parallel, "
            "on a dask.distributed client when one is active; pass the cell table as an AnnData)"
        )
    if spatial_key not in adata.obsm:
        raise InvalidArgumentError(f"spatial_neighbors: adata.obsm has no {spatial_key!r} (spatial_key)")
    params = dict(squidpy_kwargs)
    if params.get("coord_type") is None:  # squidpy decides on the whole table, not on one tissue's piece
        params["coord_type"] = "grid" if _SPATIAL in adata.uns else "generic"
    codes, names = _library_codes(adata, library_key)
    if codes.size == 0:
        raise InvalidArgumentError("spatial_neighbors: the table has no cells")
    order, bounds, libraries = _group(codes, len(names))
    coords = np.asarray(adata.obsm[spatial_key])
    grouped = np.ascontiguousarray(coords) if order is None else np.ascontiguousarray(coords[order])
    tissues = [_Tissue(str(names[lib]), grouped[bounds[i] : bounds[i + 1]], params) for i, lib in enumerate(libraries)]
    n = codes.size
    # the graph is hundreds of MB at millions of cells: first give back the pages the process freed
    # before (a cohort's readers leave them in its RSS), so that they do not add to the peak
    release_free_memory()
    conn, dist = _CSRStream(n), _CSRStream(n)
    pending: dict[int, tuple[Any, Any]] = {}
    done = 0
    uns_params: dict[str, Any] = {}
    with _quiet_squidpy():
        for position, (c, d, tissue_params) in imap_tissues(
            _tissue_graph, tissues, progress=progress, description="spatial graph"
        ):
            pending[position], uns_params = (c, d), tissue_params
            while done in pending:  # blocks go in in tissue order (a client returns them as they complete)
                c, d = pending.pop(done)
                start = int(bounds[done])
                columns = start if order is None else order[start : int(bounds[done + 1])]
                conn.append(c, columns)
                dist.append(d, columns)
                done += 1
    del tissues, grouped, pending, c, d
    connectivities, distances = conn.matrix(), dist.matrix()
    if order is not None:  # rows back to the table's order, one matrix at a time
        row_of = np.empty(n, dtype=np.int64)
        row_of[order] = np.arange(n)
        connectivities = connectivities[row_of]
        distances = distances[row_of]
    logger.info("spatial graph of %d tissue(s), %d cells: %d edges", len(libraries), n, connectivities.nnz)
    if copy:
        return SpatialNeighborsResult(connectivities=connectivities, distances=distances)
    conns_key, dists_key = f"{key_added}_connectivities", f"{key_added}_distances"
    adata.obsp[conns_key] = connectivities
    adata.obsp[dists_key] = distances
    adata.uns[f"{key_added}_neighbors"] = {
        "connectivities_key": conns_key,
        "distances_key": dists_key,
        "params": uns_params,
    }
    return None
