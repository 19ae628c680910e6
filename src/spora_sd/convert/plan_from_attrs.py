"""Build an export plan from the reverse map that :func:`spora_sd.to_spatialdata` stores in ``attrs``.

``sdata.attrs["spora"]`` says which spora file every element came from (``elements``), and how the
tables were spelled (column order and dtypes of ``tissues.parquet``, ``cells.parquet`` and
``channels.parquet``, the label encoders). With it the cohort is written back as it was: the same
tissue ids, files, pixels (bit for bit), and tables (same columns, order and dtypes).

The SpatialData may have been changed in between, and the map is untrusted input like any file:

- only elements that are still in ``sdata`` are written (a subset exports a smaller cohort);
- every name from the map is checked by :mod:`spora_sd.layout` before it becomes a path;
- an image's channels are its ``c_coords`` (the map's ``channels_per_tissue`` is not trusted over them);
- cell-table columns added after the conversion (e.g. cluster labels) are exported too;
- with another ``dataset`` key than the map's, tissue ids are re-keyed to the new dataset.

Examples
--------
>>> import spora_sd, tempfile
>>> root = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=10)
>>> plan = plan_from_reverse_map(spora_sd.to_spatialdata(root), dataset="synthetic2025cohort")
>>> plan.source, len(plan.tissues)
('reverse map', 2)
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.convert import element_names
from spora_sd.convert.attrs import ElementEntry, SporaAttrs, has_spora_attrs, read_spora_attrs
from spora_sd.convert.plan import (
    INSTANCES,
    TISSUE,
    ExportInputError,
    ExportPlan,
    ImageSource,
    MaskSource,
    Problems,
    TissuePlan,
    channel_names,
    channels_per_tissue_table,
    channels_table,
    check_channel_names,
    element_yx_shape,
    merge_panels,
    panel_order,
)
from spora_sd.errors import AttrsFormatError, LayoutNameError

__all__ = ["ReverseMapExtras", "has_reverse_map", "plan_from_reverse_map", "reverse_map_extras"]

logger = logging.getLogger(__name__)

_KINDS = {"image", "cells", "tissue", "semantic"}


def has_reverse_map(sdata: Any) -> bool:
    """Whether ``sdata`` carries the ``attrs["spora"]`` that :func:`spora_sd.to_spatialdata` writes (its reverse map).

    Only its presence: :func:`plan_from_reverse_map` reads and checks it, so that a newer major format
    version or a malformed one raises rather than being mistaken for a SpatialData from elsewhere.

    >>> import spatialdata as sd
    >>> has_reverse_map(sd.SpatialData())
    False
    """
    return has_spora_attrs(sdata)


class ReverseMapExtras(NamedTuple):
    """What writing the cohort back exactly needs besides the reverse map (:func:`reverse_map_extras`)."""

    #: Category order of the categorical columns of ``cells.parquet`` (``None``: no such file).
    cell_categories: dict[str, list] | None
    #: The same for ``tissues.parquet``.
    tissue_categories: dict[str, list] | None
    #: ``{"standardization": [recipe, ...], "tiling": [recipe, ...]}``: how the derived products were computed.
    derived: dict[str, list[dict]]


def reverse_map_extras(cohort: Any) -> ReverseMapExtras:
    """What :func:`spora_sd.to_spatialdata` stores besides the reverse map, for an exact write-back.

    The category order of the categorical columns of ``cells.parquet`` and ``tissues.parquet`` (read from
    the first row group's dictionary, never the whole column), and how the standardization statistics and
    the tilings were computed, so that :func:`spora_sd.from_spatialdata` computes the same ones.

    Parameters
    ----------
    cohort
        The :class:`~spora_sd.io.cohort.Cohort` being converted.
    """
    cells, tissues = cohort.paths.cells, cohort.paths.tissues
    return ReverseMapExtras(
        cell_categories=_parquet_categories(cells) if cells.is_file() else None,
        tissue_categories=_parquet_categories(tissues) if tissues.is_file() else None,
        derived={"standardization": _standardization_recipes(cohort), "tiling": _tiling_recipes(cohort)},
    )


def _parquet_categories(path: Any) -> dict[str, list]:
    from spora_sd.io.tables import open_parquet

    try:
        file = open_parquet(path)  # local or remote
        meta = file.schema_arrow.pandas_metadata or {}
    except (OSError, ValueError):
        return {}
    wanted = {
        c["field_name"]: c.get("metadata", {}).get("num_categories")
        for c in meta.get("columns", [])
        if c.get("pandas_type") == "categorical" and c.get("field_name") in file.schema_arrow.names
    }
    if not wanted or file.metadata.num_row_groups == 0:
        return {}
    group = file.read_row_group(0, columns=list(wanted))
    out = {}
    for name, n in wanted.items():
        column = group.column(name)
        if column.num_chunks and hasattr(column.chunk(0), "dictionary"):
            values = column.chunk(0).dictionary.to_pylist()
            if n is None or len(values) == n:  # the full category list, not only this row group's values
                out[name] = values
    return out


def _standardization_recipes(cohort: Any) -> list[dict]:
    out: dict[tuple, dict] = {}
    for modality in cohort.multiplex_modalities:
        for mpp in cohort.resolutions(modality):
            for method, param in cohort.standardization_specs(modality, mpp):
                try:
                    upper, lower = layout.parse_standardization_param(param)
                except LayoutNameError:
                    continue
                if method not in layout.STANDARDIZATION_METHODS:
                    continue
                recipe = out.setdefault(
                    (modality, mpp, upper, lower),
                    {
                        "modality": modality,
                        "resolution": mpp,
                        "methods": [],
                        "upper_quantile": upper,
                        "lower_quantile": lower,
                    },
                )
                recipe["methods"].append(method)
    return list(out.values())


def _tiling_recipes(cohort: Any) -> list[dict]:
    from spora_sd.io.tables import read_table

    out = []
    for mpp, strategy, size in cohort.tilings():
        stats = cohort.paths.tile_stats(mpp, strategy, size)
        try:
            params = read_table(stats, columns=["stride", "min_tissue"]).iloc[0]
            recipe = {"stride": int(params["stride"]), "min_tissue": float(params["min_tissue"])}
        except (FileNotFoundError, KeyError, IndexError, ValueError):
            logger.debug("%s: tiling parameters unknown; not carried over", stats)
            continue
        out.append({"resolution": mpp, "strategy": strategy, "tile_size": size, **recipe})
    return out


# --------------------------------------------------------------------------------------------------
# helpers


def _restore(frame: pd.DataFrame, dtypes: dict[str, str], categories: dict[str, list] | None = None) -> pd.DataFrame:
    """Give columns back the dtypes (and category order) they had in the cohort.

    The conversion made strings categorical with sorted categories; ``categories`` holds the order
    of the cohort's own categorical columns (:func:`reverse_map_extras`).
    """
    for column, dtype in dtypes.items():
        if column not in frame.columns:
            continue
        if dtype == "category" and column in (categories or {}):
            known = list((categories or {})[column])
            values = frame[column]
            if isinstance(values.dtype, pd.CategoricalDtype) and all(isinstance(k, str) for k in known):
                # recode the categories, not the rows: no object per row (1 s and 0.4 GB for 6 M cells)
                used = values.cat.remove_unused_categories().cat.categories
                if all(isinstance(v, str) for v in used):
                    new = sorted(set(used) - set(known))
                    frame[column] = values.cat.set_categories(known + new)
                    continue
            values = values.astype(object)
            new = sorted({str(v) for v in values.dropna()} - {str(k) for k in known})
            frame[column] = pd.Categorical(values, categories=known + new)
            continue
        if str(frame[column].dtype) == dtype:
            continue
        try:
            if dtype == "object":
                values = frame[column].astype(object)
                frame[column] = values.where(values.notna(), None)
            else:
                frame[column] = frame[column].astype(dtype)
        except (TypeError, ValueError) as exc:
            logger.warning("column %r stays %s (cannot restore %s: %s)", column, frame[column].dtype, dtype, exc)
    return frame


def _renamed(column: pd.Series, new_id: dict[str, str]) -> pd.Series:
    """Tissue ids mapped to ``new_id`` (re-keyed), keeping a categorical's order and dropping unused ids."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.cat.remove_unused_categories()
        return column.cat.rename_categories([new_id.get(str(t), str(t)) for t in column.cat.categories])
    return column.map(lambda t: new_id.get(str(t), t))


def _rekey(tissue_id: str, dataset: str) -> str:
    parts = layout.parse_tissue_id(tissue_id)
    return layout.compose_tissue_id(dataset, parts.patient_id, parts.specimen_id)


def _check_entry(name: str, entry: ElementEntry) -> None:
    """The names of an entry (types and keys are checked by the schema) obey the layout."""
    where = f"sdata.attrs['spora']['elements'][{name!r}]"
    if entry.kind not in _KINDS:
        raise ExportInputError(f"{where}: unknown kind {entry.kind!r}")
    try:
        layout.check_tissue_id(entry.tissue_id)
        layout.format_resolution(entry.mpp)  # raises on a bad mpp
        if entry.kind == "image":
            layout.check_modality(str(entry.modality))
        if entry.kind == "semantic":
            element_names.check_task_name(str(entry.task))
    except LayoutNameError as error:
        raise ExportInputError(f"{where}: {error}") from None


def _entries(sdata: Any, info: SporaAttrs, problems: Problems) -> dict[str, ElementEntry]:
    """The map's entries whose element is still in ``sdata``, checked (bad ones are recorded in ``problems``)."""
    out = {}
    for name, entry in info.elements.items():
        present = name in (sdata.images if entry.kind == "image" else sdata.labels)
        if not present:
            continue
        with problems.collect():
            _check_entry(name, entry)
            out[name] = entry
    return out


# --------------------------------------------------------------------------------------------------
# tables


def _check_tables(sdata: Any, problems: Problems) -> None:
    """The key columns that the tables of a converted cohort must still have."""
    needed = {element_names.CELL_TABLE: ["tissue_id"], element_names.TISSUE_TABLE: ["tissue_id", "modality"]}
    for name, columns in needed.items():
        table = sdata.tables.get(name)
        missing = [c for c in columns if table is not None and c not in table.obs.columns]
        if missing:
            problems.add(f"table {name!r}: obs columns {missing} are missing; the export needs them back")


def _cells_table(sdata: Any, info: SporaAttrs, tissue_ids: set[str]) -> pd.DataFrame | None:
    table = sdata.tables.get(element_names.CELL_TABLE)
    meta = info.cells
    if table is None or meta is None:
        return None
    obs = table.obs
    positions = _rows_of(obs["tissue_id"], tissue_ids)
    var_names = [str(v) for v in table.var_names]
    columns = list(meta.columns)
    tissues = info.tissues
    joined = set(tissues.columns if tissues is not None else []) - {"tissue_id"}  # tissue columns joined into obs
    added = [
        str(c)
        for c in obs.columns
        if str(c) not in columns and str(c) != element_names.REGION_KEY and str(c) not in joined
    ]
    if added:
        logger.info("cell-table columns added after the conversion are exported too: %s", added)
    x = table.X if positions is None else table.X[positions]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    data: dict[str, Any] = {}
    for column in [*columns, *added]:
        if column in obs.columns:
            values = obs[column] if positions is None else obs[column].iloc[positions]
            data[column] = pd.Series(values.array, copy=False)  # keeps its dtype; no copy of every row
        elif column in var_names:
            data[column] = x[:, var_names.index(column)]
        else:
            logger.warning("cells.parquet column %r is no longer in the cell table: not exported", column)
    # copy=False: the columns stay views of obs and X (one block each); a dict of columns is otherwise
    # copied into consolidated blocks, a second cell table (140 MB at 6 M cells) held for the whole write
    return _restore(pd.DataFrame(data, copy=False), meta.dtypes, meta.categories)


def _rows_of(column: pd.Series, tissue_ids: set[str]) -> np.ndarray | None:
    """Positions of the rows whose tissue id is in ``tissue_ids``; ``None`` when that is every row.

    A categorical column is matched by its categories (one test per tissue, not a string per cell).

    >>> _rows_of(pd.Series(pd.Categorical(["a", "b", "a"])), {"a"})
    array([0, 2])
    >>> _rows_of(pd.Series(["a", "b"]), {"a", "b"}) is None
    True
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        keep = np.array([str(c) in tissue_ids for c in column.cat.categories] + [False], dtype=bool)
        selected = keep[column.cat.codes.to_numpy()]  # code -1 (missing) picks the final False
    else:
        selected = column.astype(str).isin(tissue_ids).to_numpy()
    return None if selected.all() else np.flatnonzero(selected)


def _ranks(column: pd.Series, rank: dict[str, int]) -> np.ndarray:
    """``rank[tissue id]`` of every row, -1 for ids not in ``rank`` (a categorical is looked up once per category).

    >>> _ranks(pd.Series(pd.Categorical(["b", "a", "b"])), {"b": 0, "a": 1})
    array([0, 1, 0])
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        per_category = np.array([rank.get(str(c), -1) for c in column.cat.categories], dtype=np.int64)
        return per_category[column.cat.codes.to_numpy()]
    return column.astype(str).map(rank).fillna(-1).to_numpy(dtype=np.int64)


def _in_order(ranks: np.ndarray, cell_ids: np.ndarray, block: int = 1 << 20) -> bool:
    """Whether the rows are sorted by ``(ranks, cell_ids)`` already (what a stable lexsort would leave alone).

    Compared one block of rows at a time: at 6 M cells, a lexsort and the ``arange`` it was compared
    with were 140 MB of int64 for a table that is almost always in order.

    >>> _in_order(np.array([0, 0, 1]), np.array([1, 2, 1])), _in_order(np.array([0, 0, 1]), np.array([2, 1, 3]))
    (True, False)
    """
    for start in range(0, max(len(ranks) - 1, 0), block):
        stop = min(start + block, len(ranks) - 1)
        r0, r1 = ranks[start:stop], ranks[start + 1 : stop + 1]
        c0, c1 = cell_ids[start:stop], cell_ids[start + 1 : stop + 1]
        if np.any((r1 < r0) | ((r1 == r0) & (c1 < c0))):
            return False
    return True


def _tissues_table(sdata: Any, info: SporaAttrs, images: dict[str, ElementEntry]) -> pd.DataFrame:
    meta = info.tissues
    known = list(meta.columns) if meta is not None else []
    pairs = {(e.tissue_id, str(e.modality)) for e in images.values()}
    table = sdata.tables.get(element_names.TISSUE_TABLE)
    if table is not None:
        frame = table.obs.reset_index(drop=True)
        keep = [(str(t), str(m)) in pairs for t, m in zip(frame["tissue_id"], frame["modality"], strict=True)]
        frame = frame.loc[keep].reset_index(drop=True)
    else:
        # No tissues table (to_spatialdata(tissue_metadata="obs" or None)): rebuild the required columns.
        lost = [c for c in known if c not in ("tissue_id", "patient_id", "specimen_id", "modality")]
        logger.warning("no 'tissues' table: tissues.parquet is rebuilt from the elements, without %s", lost)
        rows = sorted(pairs)
        frame = pd.DataFrame(
            {
                "tissue_id": [t for t, _ in rows],
                "patient_id": [layout.parse_tissue_id(t).patient_id for t, _ in rows],
                "specimen_id": [layout.parse_tissue_id(t).specimen_id for t, _ in rows],
                "modality": [m for _, m in rows],
                "alignment": pd.Series([None] * len(rows), dtype=object),
            }
        )
        for modality in sorted({m for _, m in rows}):
            mpp = {e.tissue_id: e.mpp for e in images.values() if e.modality == modality}
            frame[f"mpp_{modality}"] = frame["tissue_id"].map(mpp).astype(float)
    columns = [c for c in known if c in frame.columns]
    frame = frame[columns + [c for c in frame.columns if c not in columns]]
    if meta is None:
        return frame
    return _restore(frame, meta.dtypes, meta.categories)


def _channels(info: SporaAttrs, modality: str, image_channels: dict[str, list[str]], var: pd.DataFrame) -> pd.DataFrame:
    meta = info.channels(modality)
    found = merge_panels(image_channels.values())
    if meta is not None and meta.records:
        frame = pd.DataFrame(meta.records, columns=meta.columns)
        extra = [c for c in found if c not in set(frame["channel_name"].astype(str))]
        if extra:
            logger.warning("%s channels %s are not in the cohort's channels.parquet: appended", modality, extra)
            frame = pd.concat([frame, channels_table(extra, var)], ignore_index=True)
        return _restore(frame, meta.dtypes)
    return channels_table(found, var)


# --------------------------------------------------------------------------------------------------


def plan_from_reverse_map(sdata: Any, *, dataset: str) -> ExportPlan:
    """The export plan of a SpatialData made by :func:`spora_sd.to_spatialdata`.

    Parameters
    ----------
    sdata
        The SpatialData object, with the ``attrs["spora"]`` of :mod:`spora_sd.convert.attrs`.
    dataset
        Dataset key of the new cohort; tissue ids are re-keyed when it differs from the map's.

    Returns
    -------
    The plan; nothing is written.

    Raises
    ------
    AttrsVersionError
        When ``attrs["spora"]`` has a newer major format version than this spora-sd reads.
    AttrsFormatError
        When ``attrs["spora"]`` is missing or malformed.
    ExportInputError
        When the elements, names or tables cannot be exported (every problem at once).
    """
    layout.check_dataset_key(dataset)
    info = read_spora_attrs(sdata)
    if info is None:
        raise AttrsFormatError([("sdata.attrs['spora']", "missing: the SpatialData was not made by to_spatialdata")])
    # Every element and table is checked, and every problem is reported in one ExportInputError.
    problems = Problems()
    entries = _entries(sdata, info, problems)
    images = {n: e for n, e in entries.items() if e.kind == "image"}
    if not images and not problems:
        problems.add("the SpatialData has no image element of its spora reverse map: nothing to export")
    image_channels: dict[str, dict[str, list[str]]] = {}
    for name, entry in images.items():
        with problems.collect():
            names = check_channel_names(channel_names(sdata.images[name]), f"image {name!r}")
            image_channels.setdefault(str(entry.modality), {})[entry.tissue_id] = names
    encoders = {}
    tasks = {(e.mpp, str(e.task)) for e in entries.values() if e.kind == "semantic"}
    for mpp, task in sorted(tasks):
        mapping = info.label_encoder(task)
        if mapping is None:
            problems.add(f"sdata.attrs['spora']['label_encoders'] has no categories for task {task!r}")
            continue
        try:
            ids = np.asarray(list(mapping.values()), "int64")
        except (TypeError, ValueError):
            problems.add(f"sdata.attrs['spora']['label_encoders'][{task!r}]: the class ids must be integers")
            continue
        encoders[(mpp, task)] = pd.DataFrame({"name": list(mapping), "id": ids})
    _check_tables(sdata, problems)
    problems.raise_if_any()

    tissue_ids = sorted({e.tissue_id for e in images.values()})
    source = info.dataset
    rekey = source != dataset
    if rekey:
        logger.info("re-keying tissue ids from dataset %r to %r", source, dataset)
    new_id = {t: _rekey(t, dataset) if rekey else t for t in tissue_ids}

    # channels: each image's c_coords (checked above), panels in the cohort's channels.parquet order
    var = sdata.tables[element_names.CELL_TABLE].var if element_names.CELL_TABLE in sdata.tables else None
    var = var if var is not None else pd.DataFrame(index=pd.Index([], dtype=object))
    channel_tables, cpt, panels = {}, {}, {}
    for modality, per_tissue in sorted(image_channels.items()):
        if not layout.is_multiplex(modality):
            continue
        channel_tables[modality] = _channels(info, modality, per_tissue, var)
        panels[modality] = channel_tables[modality]["channel_name"].astype(str).tolist()
        ordered = {new_id[t]: panel_order(c, panels[modality])[0] for t, c in sorted(per_tissue.items())}
        cpt[modality] = channels_per_tissue_table(panels[modality], ordered)

    plans = {t: TissuePlan(new_id[t]) for t in tissue_ids}
    for name, entry in sorted(images.items()):
        modality, tid = str(entry.modality), entry.tissue_id
        names = image_channels[modality][tid]
        ordered, order = panel_order(names, panels[modality]) if modality in panels else (names, None)
        plans[tid].images.append(ImageSource(name, modality, entry.mpp, tuple(ordered), order))
    for name, entry in sorted(entries.items()):
        if entry.kind == "image" or entry.tissue_id not in plans:
            continue
        what = {"cells": INSTANCES, "tissue": TISSUE}.get(entry.kind, entry.task)
        plans[entry.tissue_id].masks.append(MaskSource(name, str(what), entry.mpp))
    for tid, plan in plans.items():
        covered = {m.mpp for m in plan.masks if m.what == TISSUE}
        for image in plan.images:
            if image.mpp not in covered:  # the layout needs a tissue mask at every image resolution
                logger.info("%s: no tissue mask at %s mpp; the whole image counts as tissue", tid, image.mpp)
                plan.full_tissue_masks.append((image.mpp, element_yx_shape(sdata.images[image.element])))
                covered.add(image.mpp)

    # Tables list tissues in the cohort's own order (that of tissues.parquet), not sorted.
    tissues = _tissues_table(sdata, info, images)
    rank = {t: i for i, t in enumerate(dict.fromkeys([*tissues["tissue_id"].astype(str), *tissue_ids]))}
    tissue_ids.sort(key=rank.__getitem__)
    for modality in cpt:
        cpt[modality] = cpt[modality].loc[[new_id[t] for t in tissue_ids if new_id[t] in cpt[modality].index]]

    cells = _cells_table(sdata, info, set(tissue_ids))
    if cells is not None:
        ranks = _ranks(cells["tissue_id"], rank)
        if not _in_order(ranks, cells["cell_id"].to_numpy()):  # usually in order already: no copy of every column
            order = np.lexsort((cells["cell_id"].to_numpy(), ranks))
            cells, ranks = cells.iloc[order].reset_index(drop=True), ranks[order]
        cells["tissue_id"] = _renamed(cells["tissue_id"], new_id)
        # each tissue's cells are one run of rows now: cut the cell ids at the run bounds
        wanted = np.array([rank[t] for t in tissue_ids], dtype=np.int64)
        lo, hi = np.searchsorted(ranks, wanted, "left"), np.searchsorted(ranks, wanted, "right")
        cell_ids = cells["cell_id"].to_numpy()
        by_tissue = {new_id[t]: cell_ids[lo[i] : hi[i]] for i, t in enumerate(tissue_ids)}
        for plan in plans.values():
            if any(m.what == INSTANCES for m in plan.masks):
                plan.cell_ids = by_tissue.get(plan.tissue_id, np.array([], dtype=np.int64))
    tissues["tissue_id"] = _renamed(tissues["tissue_id"], new_id)
    return ExportPlan(
        dataset=dataset,
        tissues=[plans[t] for t in tissue_ids],
        tissues_table=tissues,
        cells_table=cells,
        channels=channel_tables,
        channels_per_tissue=cpt,
        label_encoders=encoders,
        source="reverse map",
        derived=info.derived,
    )
