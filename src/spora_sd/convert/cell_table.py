"""The cell table of a cohort as an :class:`anndata.AnnData` that annotates the instance labels.

Built straight from the pyarrow columns of ``metadata/cells.parquet`` (no pandas frame of the whole
table is ever made):

- ``X``: mean intensities, cells x channels of the multiplex panels, float32, NaN where a tissue lacks
  a channel. Stored column-major (Fortran order): every channel is one contiguous copy of its Parquet
  column, which is several times faster than scattering the columns into a row-major matrix. When
  no row moves (the whole file, rows in order), the intensity columns are read one row group at a
  time straight into ``X`` (Arrow never holds them all, the file is memory-mapped), while two
  threads make the obs names.
  When ``cells.parquet`` holds no intensity column of a modality, they are computed from the images
  and the instance masks (:func:`spora_sd.stats.intensities.label_means`).
- ``var``: ``<modality>/channels.parquet`` indexed by channel name, plus a ``modality`` column.
- ``obs``: ``region`` (the ``<tissue_id>__cells`` labels element, categorical), ``tissue_id``
  (categorical), ``cell_id`` (the mask label, integer) and every other column of ``cells.parquet``;
  strings become categoricals. Optionally the tissue-level columns of ``tissues.parquet``.
- ``obsm["spatial"]``: cell centroids in micrometers, ``(x, y)`` order, computed from the instance
  masks one tissue at a time (:func:`spora_sd.stats.intensities.label_centroids`); the centre of pixel
  ``(i, j)`` is at ``((j + 0.5) * mpp, (i + 0.5) * mpp)``, as in SpatialData's pixel coordinates.
- rows grouped by region (tissue) and ordered by ``cell_id`` within it, as squidpy expects: when
  ``cells.parquet`` is already grouped that way its tissue order is kept (no row moves), otherwise
  the rows are sorted by tissue id and ``cell_id``; the region categories follow the row order. Obs
  names are ``<tissue_id>__<cell_id>``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from anndata import AnnData

from spora_sd.convert import element_names
from spora_sd.errors import CohortFormatError, CohortNotFoundError
from spora_sd.io.cohort import Cohort
from spora_sd.io.masks import read_mask
from spora_sd.io.tables import read_arrow_table, read_row_groups
from spora_sd.stats.intensities import LabelIndex, finest_mask_resolution, image_means, label_centroids
from spora_sd.stats.parallel import imap_tissues

__all__ = ["build_cell_table", "tissue_level_columns"]

logger = logging.getLogger(__name__)

#: obs columns made by spora-sd (never taken from cells.parquet or tissues.parquet under these names).
KEY_COLUMNS = ("tissue_id", element_names.INSTANCE_KEY)

#: Rows per slice of obs names (see _submit_obs_names): making the Python strings of one slice
#: (pandas 2) holds the GIL for about 15 ms, so the thread filling X is never held up for long.
NAME_SLICE = 1 << 18
#: Threads making the obs names (one joins Arrow strings while the other makes Python strings).
NAME_THREADS = 2


# --------------------------------------------------------------------------------------------------
# pyarrow -> numpy / pandas without going through a pandas frame of the whole table


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    """One column as a numpy array (a single copy; nulls of floats become NaN)."""
    if column.num_chunks == 1:
        return column.chunk(0).to_numpy(zero_copy_only=False)
    return column.to_numpy()


def _copy_column(column: pa.ChunkedArray, out: np.ndarray) -> None:
    """Copy a numeric column into ``out`` chunk by chunk: one copy, no concatenated intermediate."""
    start = 0
    for chunk in column.chunks:
        stop = start + len(chunk)
        out[start:stop] = chunk.to_numpy(zero_copy_only=False)
        start = stop


def _dictionary(column: pa.ChunkedArray) -> tuple[np.ndarray, pd.Index]:
    """``(codes, categories)`` of a string or dictionary column; codes are -1 for nulls."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    column = pa.table({"c": column}).unify_dictionaries().column("c")
    if column.num_chunks == 0:
        return np.empty(0, dtype=np.int32), pd.Index([], dtype=object)
    categories = column.chunk(0).dictionary.to_pandas()
    codes = np.concatenate(
        [pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False) for chunk in column.chunks]
    ).astype(np.int32, copy=False)
    return codes, pd.Index(categories)


def _categorical(column: pa.ChunkedArray) -> pd.Categorical:
    """A string/dictionary column as a categorical with sorted categories (deterministic across files)."""
    codes, categories = _dictionary(column)
    used = np.zeros(len(categories) + 1, dtype=bool)
    used[codes] = True  # null codes (-1) mark the last entry
    kept = np.flatnonzero(used[:-1])
    order = kept[np.argsort(categories[kept].astype(str), kind="stable")]
    if not np.array_equal(order, np.arange(len(categories))):
        remap = np.full(len(categories) + 1, -1, dtype=np.int32)  # null codes (-1) take the last entry
        remap[order] = np.arange(len(order), dtype=np.int32)
        codes = remap[codes]
    # the codes are in range by construction: pandas' check of every code is skipped
    return pd.Categorical.from_codes(codes, categories=categories[order], validate=False)


def _obs_column(column: pa.ChunkedArray) -> Any:
    """An obs column: strings become categoricals; other types keep what pandas makes of them."""
    kind = column.type
    if pa.types.is_dictionary(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _categorical(column)
    return column.to_pandas().array


# --------------------------------------------------------------------------------------------------
# per-tissue statistics from the masks


@dataclass(frozen=True)
class _StatsJob:
    tissue_id: str
    mask: str
    mpp: float
    # ((image path, panel positions of the image's channels into the table's var, the image's channel
    # names from the tables), ...): modalities whose intensities cells.parquet lacks
    images: tuple[tuple[str, tuple[int, ...], tuple[str, ...]], ...]
    n_vars: int
    on_mismatch: str = "raise"


@dataclass(frozen=True)
class _Stats:
    labels: np.ndarray  # the mask's sorted distinct nonzero labels
    xy: np.ndarray  # (len(labels), 2) centroids in µm, (x, y)
    means: np.ndarray | None  # (len(labels), n_vars) or None


def _tissue_stats(job: _StatsJob) -> _Stats:
    mask = read_mask(job.mask)
    index = LabelIndex(mask, job.mask)  # compact: arrays as long as the cells, whatever the label values
    labels, _, cy, cx = label_centroids(mask, index)
    xy = np.column_stack([(cx + 0.5) * job.mpp, (cy + 0.5) * job.mpp])
    means = None
    if job.images:
        means = np.full((len(labels), job.n_vars), np.nan)
        for image_path, positions, channels in job.images:
            _, image_means_ = image_means(
                image_path,
                mask,
                job.mask,
                len(positions),
                channel_names=channels,
                mpp=job.mpp,
                on_mismatch=job.on_mismatch,  # type: ignore[arg-type]
                index=index,
            )
            means[:, list(positions)] = image_means_.T
    return _Stats(labels, xy, means)


# --------------------------------------------------------------------------------------------------


def _unchecked_names() -> contextlib.AbstractContextManager[None]:
    import anndata

    if hasattr(anndata.settings, "check_uniqueness"):  # anndata >= 0.11
        return anndata.settings.override(check_uniqueness=False)
    return contextlib.nullcontext()


def tissue_level_columns(tissues: pd.DataFrame) -> list[str]:
    """Columns of ``tissues.parquet`` that have one value per tissue (the same in every modality row).

    These are the columns that can be joined into the cell table; ``modality``, ``alignment`` and
    any other column that differs between the rows of one registered tissue are left out.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"tissue_id": ["a", "a"], "modality": ["he", "imc"], "grade": [2, 2]})
    >>> tissue_level_columns(t)
    ['grade']
    """
    candidates = [c for c in tissues.columns if c not in KEY_COLUMNS and c != element_names.REGION_KEY]
    if not candidates or tissues.empty:
        return candidates
    grouped = tissues.groupby("tissue_id", sort=False, observed=True)[candidates]
    constant = grouped.nunique(dropna=False).le(1).all()
    return [c for c in candidates if bool(constant[c])]


def _panel_var(cohort: Cohort, modalities: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """``var`` (channels tables of ``modalities``, indexed by channel name) and each modality's first column."""
    frames, offsets, start = [], {}, 0
    for m in modalities:
        channels = cohort.channels(m).copy()
        channels["modality"] = pd.Categorical([m] * len(channels), categories=list(modalities))
        frames.append(channels)
        offsets[m] = start
        start += len(channels)
    if not frames:
        return pd.DataFrame(index=pd.Index([], dtype=object)), offsets
    var = pd.concat(frames, ignore_index=True)
    var.index = pd.Index(var.pop("channel_name").astype(str).to_numpy())
    for column in var.columns:
        # object in pandas 2, "str" in pandas 3
        if var[column].dtype == object or pd.api.types.is_string_dtype(var[column].dtype):
            var[column] = var[column].astype("category")
    return var, offsets


def _read_cells(cohort: Cohort, columns: list[str], tissue_ids: list[str] | None) -> pa.Table:
    path = cohort.paths.cells
    filters = [("tissue_id", "in", tissue_ids)] if tissue_ids is not None else None
    return read_arrow_table(path, columns=columns, filters=filters)  # local or remote; names the file on failure


def _submit_obs_names(
    pool: ThreadPoolExecutor, tissue_codes: np.ndarray, order: list[str], cell_ids: np.ndarray
) -> Callable[[], pd.Index]:
    """Start making the obs names ``<tissue_id>__<cell_id>`` in ``pool``; returns the call that collects them.

    The names are in pandas' default string dtype, as anndata reads them back: ``str`` in pandas 3,
    which wraps the Arrow strings as they are; ``object`` in pandas 2, one Python string per cell,
    made with the GIL held (0.6 s for 6 M cells). They are made in slices of :data:`NAME_SLICE`
    rows: while one worker makes the Python strings of a slice, the other joins the Arrow strings of
    the next (which needs no GIL), and the thread filling ``X`` gets the GIL between slices.
    """
    tissues = pa.array(order, pa.string())
    numbers = _decimal_strings(cell_ids)
    strings = None if pa.array([], pa.string()).to_pandas().dtype != object else np.empty(len(cell_ids), object)
    parts = [
        pool.submit(
            _name_slice, tissues, numbers, tissue_codes[i : i + NAME_SLICE], cell_ids[i : i + NAME_SLICE], strings, i
        )
        for i in range(0, len(cell_ids), NAME_SLICE)
    ]

    def collect() -> pd.Index:
        arrays = [part.result() for part in parts]
        if strings is None:
            return pd.Index(pa.chunked_array(arrays, pa.string()).to_pandas())
        return pd.Index(strings, dtype=object, copy=False)

    return collect


def _decimal_strings(cell_ids: np.ndarray) -> pa.Array | None:
    """``"0"``, ``"1"``, ... up to the largest cell id, when the ids are small enough for such a table.

    Taking a cell id's string from it costs half as much as formatting every id (cell ids are
    mask labels, mostly ``1..n`` per tissue); ``None`` when an id is negative or the largest is far
    beyond the number of cells.
    """
    if len(cell_ids) == 0 or cell_ids.min() < 0 or cell_ids.max() > len(cell_ids) + NAME_SLICE:
        return None
    return pc.cast(pa.array(np.arange(int(cell_ids.max()) + 1)), pa.string())


def _name_slice(
    tissues: pa.Array,
    numbers: pa.Array | None,
    codes: np.ndarray,
    cell_ids: np.ndarray,
    strings: np.ndarray | None,
    start: int,
) -> pa.Array:
    """The names of some rows as Arrow strings, also put into ``strings[start:]`` as Python strings when given."""
    tissue_strings = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), tissues).cast(pa.string())
    ids = pa.array(cell_ids)
    id_strings = pc.cast(ids, pa.string()) if numbers is None else numbers.take(ids)
    names = pc.binary_join_element_wise(tissue_strings, id_strings, element_names.SEP)
    if strings is not None:
        # to_numpy, not to_pandas: no pandas Series per slice, and no hashing of every name to share
        # equal strings (to_pandas' default; all names differ).
        strings[start : start + len(names)] = names.to_numpy(zero_copy_only=False)
    return names


def _stream_intensities(path: Any, var_names: list[str], stored: list[str], x: np.ndarray) -> None:
    """Copy the intensity columns of ``cells.parquet`` into ``x`` one row group at a time.

    A whole-table read first holds every column in Arrow memory (1 GB for 6 M cells x 43 channels)
    and then copies it; here Arrow holds one row group, on pages it reuses, so the read costs less
    and the peak is one ``X``, not two.
    """
    changed = CohortFormatError(path, "table.unreadable", "the file changed while it was read (row counts differ)")
    start = 0
    for group in read_row_groups(path, columns=stored):
        stop = start + group.num_rows
        if stop > len(x):
            raise changed
        for j, name in enumerate(var_names):
            if name in group.column_names:
                _copy_column(group.column(name), x[start:stop, j])
        start = stop
    if start != len(x):
        raise changed


def _row_order(codes: np.ndarray, cell_ids: np.ndarray, path: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The tissues in region order, and the row permutation (``None``: the rows are in order already).

    When ``cells.parquet`` holds each tissue's cells together and in increasing ``cell_id`` (as
    writers produce it), its own tissue order is kept and no row moves; otherwise the rows are sorted
    by tissue id (``codes`` follow the sorted ids) and ``cell_id``. Duplicate keys are refused.
    """
    if len(codes) == 0:
        return np.empty(0, dtype=np.int64), None
    starts = np.flatnonzero(np.diff(codes)) + 1
    runs = codes[np.r_[0, starts]]
    same_tissue = np.diff(codes) == 0
    increasing = bool(np.all(np.diff(cell_ids)[same_tissue] > 0))
    if increasing and np.bincount(runs).max() == 1:
        return runs, None
    order = np.lexsort((cell_ids, codes))
    duplicated = (np.diff(codes[order]) == 0) & (np.diff(cell_ids[order]) == 0)
    if duplicated.any():
        cell = cell_ids[order][int(np.flatnonzero(duplicated)[0])]
        raise CohortFormatError(path, "table.key.duplicate", f"(tissue_id, cell_id) is duplicated, e.g. cell_id {cell}")
    return np.unique(codes), order


def _join_tissue_columns(obs: dict[str, Any], tissues: pd.DataFrame, order: list[str], codes: np.ndarray) -> None:
    """Broadcast the tissue-level columns of ``tissues`` to the cells (by tissue code, no merge)."""
    per_tissue = tissues.drop_duplicates("tissue_id").set_index("tissue_id")
    for name in tissue_level_columns(tissues):
        if name in obs:
            logger.info("tissue column %r not joined: the cell table already has a column of that name", name)
            continue
        column = per_tissue[name].reindex(order)
        if (
            isinstance(column.dtype, pd.CategoricalDtype)
            or pd.api.types.is_object_dtype(column.dtype)
            or (pd.api.types.is_string_dtype(column.dtype))
        ):
            # from a numpy array, string categories get pandas' default string dtype (as anndata reads them)
            categories = pd.Categorical(column.astype(object).to_numpy())
            obs[name] = pd.Categorical.from_codes(categories.codes[codes], categories=categories.categories)
        else:
            obs[name] = column.array.take(codes)


def build_cell_table(
    cohort: Cohort,
    *,
    tissue_ids: Sequence[str],
    modalities: Sequence[str],
    mask_resolution: float | None = None,
    tissues: pd.DataFrame | None = None,
    spatial: bool = True,
    progress: bool = False,
) -> AnnData:
    """The cell table of ``tissue_ids`` as an AnnData annotating the ``<tissue_id>__cells`` labels.

    Parameters
    ----------
    cohort
        The opened cohort; it must have ``metadata/cells.parquet``.
    tissue_ids
        Tissues whose cells to keep; the table's regions are ordered like the sorted tissue ids.
    modalities
        Multiplex modalities whose panels make up ``var`` (in this order).
    mask_resolution
        Resolution (mpp) of the instance masks (default: the finest with segmentations).
    tissues
        Rows of ``tissues.parquet`` whose tissue-level columns (:func:`tissue_level_columns`) are
        joined into ``obs``; ``None`` joins nothing.
    spatial
        Compute ``obsm["spatial"]`` from the instance masks (reads every instance mask once).
    progress
        Show a progress bar over the tissues.

    Returns
    -------
    anndata.AnnData
        Validated by :class:`spatialdata.models.TableModel`, with ``uns["spatialdata_attrs"]`` set.

    Examples
    --------
    >>> import spora_sd, tempfile
    >>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10)
    >>> cohort = spora_sd.open_cohort(root)
    >>> t = build_cell_table(cohort, tissue_ids=cohort.tissue_ids(), modalities=["imc"], spatial=False)
    >>> list(t.obs.columns[:3])
    ['region', 'tissue_id', 'cell_id']
    """
    from spatialdata.models import TableModel

    path = cohort.paths.cells
    if not path.is_file():
        raise CohortNotFoundError(f"{path}: this cohort has no cells table")
    order = sorted(dict.fromkeys(tissue_ids))
    position = {t: i for i, t in enumerate(order)}
    var, offsets = _panel_var(cohort, modalities)
    var_names = list(var.index)
    present = set(cohort.cell_columns)
    missing = [c for c in KEY_COLUMNS if c not in present]
    if missing:
        raise CohortFormatError(path, "table.column.missing", f"columns {missing} are missing")
    panels = {c for m in cohort.multiplex_modalities for c in cohort.panel(m)}
    obs_columns = [
        c
        for c in cohort.cell_columns
        # "__index_level_0__": a pandas index that pyarrow stored as a column, not data
        if c not in (*KEY_COLUMNS, element_names.REGION_KEY) and c not in panels and not c.startswith("__index_level_")
    ]
    stored = [c for c in dict.fromkeys(var_names) if c in present]
    subset = order if set(order) != set(cohort.tissue_ids()) else None
    table = _read_cells(cohort, [*KEY_COLUMNS, *obs_columns], subset)

    # rows: the selected tissues, ordered by tissue and then cell_id
    codes, dictionary = _dictionary(table.column("tissue_id"))
    lookup = np.array([position.get(str(t), -1) for t in dictionary], dtype=np.int32)
    tissue_codes = lookup[codes] if len(lookup) else codes
    cell_column = table.column(element_names.INSTANCE_KEY)
    if cell_column.null_count:
        raise CohortFormatError(path, "table.column.null", f"{element_names.INSTANCE_KEY} has missing values")
    if not (pa.types.is_integer(cell_column.type) or pa.types.is_dictionary(cell_column.type)):
        raise CohortFormatError(
            path,
            "table.column.dtype",
            f"{element_names.INSTANCE_KEY} is stored as {cell_column.type}; it holds the integer labels of the "
            "instance masks, so it must be an integer column",
        )
    cell_ids = _numpy(cell_column)
    if not np.issubdtype(cell_ids.dtype, np.integer):
        raise CohortFormatError(
            path, "table.column.dtype", f"{element_names.INSTANCE_KEY} must hold integers, not {cell_ids.dtype}"
        )
    rows: np.ndarray | None = None
    if (tissue_codes < 0).any():
        unknown = sorted({str(dictionary[c]) for c in np.unique(codes[tissue_codes < 0])})
        logger.warning(
            "%s: ignoring the cells of %d tissue(s) not in tissues.parquet: %s", path, len(unknown), unknown[:5]
        )
        rows = np.flatnonzero(tissue_codes >= 0)
        tissue_codes, cell_ids = tissue_codes[rows], cell_ids[rows]
    regions, perm = _row_order(tissue_codes, cell_ids, path)
    if perm is not None:
        tissue_codes, cell_ids = tissue_codes[perm], cell_ids[perm]
        rows = perm if rows is None else rows[perm]
    # Regions are the tissues that have cells, in row order: spatialdata requires the table's region
    # list to equal the regions present, and squidpy loops over every category of the library key.
    if len(regions) < len(order):
        logger.info("%s: %d selected tissue(s) have no cells", path, len(order) - len(regions))
    remap = np.full(len(order), -1, dtype=np.int32)
    remap[regions] = np.arange(len(regions), dtype=np.int32)
    tissue_codes = remap[tissue_codes]
    order = [order[i] for i in regions]

    def take(values: Any) -> Any:
        return values if rows is None else values[rows]

    # The obs names are made in NAME_THREADS threads while X is filled (see _submit_obs_names).
    pool = ThreadPoolExecutor(NAME_THREADS)
    obs_names = _submit_obs_names(pool, tissue_codes, order, cell_ids)
    n = len(cell_ids)
    # X: column-major, so that every channel is one contiguous copy of its Parquet column
    x = np.empty((n, len(var_names)), dtype=np.float32, order="F")
    for j, name in enumerate(var_names):
        if name not in present:
            x[:, j] = np.nan
    if stored and rows is None and subset is None:
        _stream_intensities(path, var_names, stored, x)
    elif stored:
        values = _read_cells(cohort, stored, subset)  # the same filter: the same rows as `table`
        for j, name in enumerate(var_names):
            if name not in present:
                continue
            if rows is None:
                _copy_column(values.column(name), x[:, j])
            else:
                x[:, j] = _numpy(values.column(name))[rows]
        del values

    obs: dict[str, Any] = {
        element_names.REGION_KEY: pd.Categorical.from_codes(
            tissue_codes,
            categories=[element_names.labels_name(t, element_names.CELLS_LABELS) for t in order],
            validate=False,  # codes in range by construction (remap above)
        ),
        "tissue_id": pd.Categorical.from_codes(tissue_codes, categories=order, validate=False),
        element_names.INSTANCE_KEY: cell_ids,
    }
    for name in obs_columns:
        obs[name] = take(_obs_column(table.column(name)))
    if tissues is not None:
        _join_tissue_columns(obs, tissues, order, tissue_codes)
    del table
    names = obs_names()
    pool.shutdown()
    # Arrow's allocator (mimalloc) keeps the pages of the freed columns for reuse, in the process's
    # RSS: about 40% of the table (84 MB at 200 tissues). Nothing else here reads Arrow; give them back.
    pa.default_memory_pool().release_unused()

    # per-tissue statistics from the masks: centroids, and the intensities cells.parquet lacks
    computed = [m for m in modalities if not any(c in present for c in cohort.panel(m))]
    obsm: dict[str, np.ndarray] = {}
    if spatial or computed:
        mpp = float(mask_resolution) if mask_resolution is not None else finest_mask_resolution(cohort)
        xy = np.full((n, 2), np.nan, dtype=np.float64)
        computed_columns = np.array(
            [offsets[m] + k for m in computed for k in range(len(cohort.panel(m)))], dtype=np.intp
        )
        jobs, bounds = _stats_jobs(cohort, order, tissue_codes, mpp, computed, offsets, len(var_names))
        for i, stats in imap_tissues(_tissue_stats, jobs, progress=progress, description="cells"):
            lo, hi = bounds[i]
            ids = cell_ids[lo:hi].astype(np.int64, copy=False)  # as the labels (uint64 vs int64 would go float)
            # the position of each cell among the mask's labels (both sorted; never indexed by the label)
            found = np.searchsorted(stats.labels, ids)
            inside = found < len(stats.labels)
            inside[inside] = stats.labels[found[inside]] == ids[inside]
            if not inside.all():
                logger.warning(
                    "%s: %d cell(s) of cells.parquet are not in the mask", jobs[i].mask, int((~inside).sum())
                )
            where = np.arange(lo, hi)[inside]
            xy[where] = stats.xy[found[inside]]
            if stats.means is not None and len(computed_columns):
                x[np.ix_(where, computed_columns)] = stats.means[np.ix_(found[inside], computed_columns)]
        if spatial:
            obsm["spatial"] = xy
    # obs names are unique by construction ((tissue, cell_id) strictly increasing, see _row_order), so
    # anndata's own check, which hashes every name (seconds for millions of cells), is skipped.
    with _unchecked_names():
        adata = AnnData(X=x, obs=_obs_argument(obs, names), var=var, obsm=obsm or None)
    adata.uns[TableModel.ATTRS_KEY] = {
        TableModel.REGION_KEY: list(obs[element_names.REGION_KEY].categories),
        TableModel.REGION_KEY_KEY: element_names.REGION_KEY,
        TableModel.INSTANCE_KEY: element_names.INSTANCE_KEY,
    }
    # TableModel.validate, not .parse: parse re-checks the (tissue, cell_id) uniqueness with a groupby
    # over every obs column, which _row_order has already guaranteed at a fraction of the cost.
    TableModel.validate(adata)
    return adata


def _obs_argument(obs: dict[str, Any], names: pd.Index) -> Any:
    """``obs`` for ``AnnData(obs=...)`` with ``names`` as obs names, without anndata's per-name checks.

    Given a frame, anndata checks that its index holds strings by masking out the missing names and
    testing every remaining one: 1.2 s for 6 M names that are strings by construction. Given a
    mapping with an ``"obs_names"`` entry (``AnnData(obs={...})`` reads that key as the names), it uses it as the
    index as it is. A cells.parquet column of that name (or ``"row_names"``, the other key anndata
    reads) makes the frame instead.
    """
    if "obs_names" in obs or "row_names" in obs:
        return pd.DataFrame(obs, index=names, copy=False)
    return {**obs, "obs_names": names}


def _stats_jobs(
    cohort: Cohort,
    order: list[str],
    tissue_codes: np.ndarray,
    mpp: float,
    computed: list[str],
    offsets: dict[str, int],
    n_vars: int,
) -> tuple[list[_StatsJob], list[tuple[int, int]]]:
    """One job per tissue with cells and an instance mask, and the rows of its cells."""
    bounds = np.searchsorted(tissue_codes, np.arange(len(order) + 1))
    jobs, starts = [], []
    for code, tissue_id in enumerate(order):
        lo, hi = int(bounds[code]), int(bounds[code + 1])
        if lo == hi:
            continue
        mask = cohort.paths.instance_mask(mpp, tissue_id)
        if not mask.is_file():
            logger.warning("%s: not found; the cells of %s get no centroid", mask, tissue_id)
            continue
        images = []
        for m in computed:
            image = cohort.paths.image(m, mpp, tissue_id)
            if not image.exists():
                logger.warning("%s: not found; the cells of %s get no %s intensities", image, tissue_id, m)
                continue
            panel = {c: k for k, c in enumerate(cohort.panel(m))}
            channels = tuple(cohort.tissue_channels(tissue_id, m))
            positions = tuple(offsets[m] + panel[c] for c in channels)
            images.append((str(image), positions, channels))
        jobs.append(_StatsJob(tissue_id, str(mask), float(mpp), tuple(images), n_vars, cohort.on_mismatch))
        starts.append((lo, hi))
    return jobs, starts
