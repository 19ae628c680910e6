"""Infer an export plan from a SpatialData that was *not* made by :func:`spora_sd.to_spatialdata`.

Objects from spatialdata-io readers (``steinbock``, ``mcmicro``, ...) carry no spora reverse map, so
what the cohort needs is inferred, and whatever cannot be inferred is an :class:`ExportInputError`
that names the missing piece and the argument that supplies it. Nothing is guessed silently: every
choice that is not forced by the data is logged.

The rules (documented in ``docs/from_spatialdata.md``):

- **Tissues.** Each labels element annotated by a table (its ``region``) is one tissue's cell
  instance mask; its image is the one image element that shares a coordinate system with it and has
  the same height and width. Images that no annotated labels claim are tissues without cells.
  Labels that no table annotates are not exported (warning).
- **Sample names.** A tissue's source name is its image element's name without the ``_image`` suffix
  that spatialdata-io readers append (``20210305_NE_mockData1_001_image`` -> ``20210305_NE_mockData1_001``).
- **Channels.** Channel names are the image's ``c_coords``; when those are only the integers
  ``0..C-1`` (spatialdata-io's steinbock reader), the ``var_names`` of the table annotating the
  tissue, which must have exactly ``C`` variables in image order.
- **mpp.** From the ``Scale`` part of the image's transformations, or the ``mpp`` argument.
- **Patients.** 8-character hashes of the ``patient_key`` column of the cell table (constant per
  tissue); without it, each source name is its own patient with specimen ``0000``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spora_sd import layout
from spora_sd.convert.plan import (
    INSTANCES,
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
    unnamed_channels,
)

__all__ = ["infer_plan"]

logger = logging.getLogger(__name__)

#: Suffixes that spatialdata-io readers append to an image element's name.
IMAGE_SUFFIXES = (layout.SPATIALDATA_IO_IMAGE_SUFFIX,)
_CELL_KEYS = ("tissue_id", "cell_id")


@dataclass
class _Annotation:
    """A table that annotates a labels element (a region)."""

    table_name: str
    region_key: str
    instance_key: str


@dataclass
class _Tissue:
    """One tissue while it is being inferred."""

    source_name: str
    image: str
    labels: str | None
    coordinate_systems: list[str]
    tissue_id: str = ""


# --------------------------------------------------------------------------------------------------
# small helpers


def _coordinate_systems(element: Any) -> dict[str, Any]:
    from spatialdata.transformations import get_transformation

    return dict(get_transformation(element, get_all=True))


def _scale_of(transformation: Any) -> float | None:
    """The isotropic scale of a transformation into a coordinate system, or None for pixel units."""
    matrix = np.asarray(transformation.to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")), float)
    linear = matrix[:2, :2]
    if np.allclose(linear, np.eye(2)) and not _contains_scale(transformation):
        return None  # Identity / Translation: the coordinate system is in pixels, no physical size
    if not np.allclose(linear, np.diag(np.diag(linear))) or not np.isclose(linear[0, 0], linear[1, 1], rtol=1e-9):
        return np.nan  # rotation, shear or anisotropic pixels: not a single mpp
    return float(linear[0, 0])


def _contains_scale(transformation: Any) -> bool:
    """Whether a ``Scale`` was set explicitly (``Scale([1, 1])`` states 1 µm per pixel; ``Identity`` states nothing)."""
    from spatialdata.transformations import Scale, Sequence

    if isinstance(transformation, Scale):
        return True
    return isinstance(transformation, Sequence) and any(_contains_scale(t) for t in transformation.transformations)


def _source_name(image_name: str) -> str:
    for suffix in IMAGE_SUFFIXES:
        if image_name.endswith(suffix) and len(image_name) > len(suffix):
            return image_name[: -len(suffix)]
    return image_name


# --------------------------------------------------------------------------------------------------
# the steps


def _annotations(sdata: Any, problems: Problems) -> tuple[dict[str, _Annotation], list[str]]:
    """labels element -> the table annotating it; and the regions that are not labels (ignored)."""
    from spatialdata.models import get_table_keys

    out: dict[str, _Annotation] = {}
    ignored: list[str] = []
    for name in sorted(sdata.tables):
        table = sdata.tables[name]
        try:
            regions, region_key, instance_key = get_table_keys(table)
        except (ValueError, KeyError):
            logger.warning("table %r annotates no element (no spatialdata_attrs): not exported", name)
            continue
        for region in [regions] if isinstance(regions, str) else list(regions):
            if region not in sdata.labels:
                ignored.append(f"{name}:{region}")
                continue
            if region in out:
                problems.add(
                    f"labels {region!r} are annotated by two tables, {out[region].table_name!r} and {name!r}; "
                    "keep one (e.g. `del sdata.tables[name]`) before exporting"
                )
                continue
            out[region] = _Annotation(name, region_key, instance_key)
    if ignored:
        logger.warning("table regions that are not labels elements are not exported: %s", ", ".join(ignored))
    return out, ignored


def _shared_systems(sdata: Any, image: str, labels: str) -> list[str]:
    img_cs = _coordinate_systems(sdata.images[image])
    lab_cs = _coordinate_systems(sdata.labels[labels])
    return sorted(
        cs
        for cs in set(img_cs) & set(lab_cs)
        # same pixel grid: the same transformation into the shared coordinate system
        if np.allclose(
            img_cs[cs].to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")),
            lab_cs[cs].to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")),
        )
    )


def _match_labels(sdata: Any, labels: str, annotation: _Annotation, shapes: dict, claimed: dict[str, str]) -> _Tissue:
    """The tissue of one annotated labels element: the one image of its size in a shared coordinate system."""
    hw = element_yx_shape(sdata.labels[labels])
    candidates = [(img, cs) for img in shapes if shapes[img] == hw and (cs := _shared_systems(sdata, img, labels))]
    if not candidates:
        raise ExportInputError(
            f"labels {labels!r} (annotated by table {annotation.table_name!r}) have no image element of "
            f"the same size {hw} in a shared coordinate system ({sorted(_coordinate_systems(sdata.labels[labels]))}); "
            "add the image, or drop the labels and their table rows"
        )
    if len(candidates) > 1:
        raise ExportInputError(
            f"labels {labels!r} match several images of size {hw} in a shared coordinate system: "
            f"{[c[0] for c in candidates]}; keep one image per tissue before exporting"
        )
    image, systems = candidates[0]
    if image in claimed:
        raise ExportInputError(
            f"image {image!r} is annotated through two labels elements, {claimed[image]!r} and {labels!r}; "
            "keep one cell table per image (e.g. drop the nuclei table) before exporting"
        )
    claimed[image] = labels
    return _Tissue(_source_name(image), image, labels, systems)


def _match_tissues(sdata: Any, annotated: dict[str, _Annotation], problems: Problems) -> list[_Tissue]:
    shapes = {name: element_yx_shape(sdata.images[name]) for name in sorted(sdata.images)}
    tissues: list[_Tissue] = []
    claimed: dict[str, str] = {}
    for labels in sorted(annotated):
        with problems.collect():
            tissues.append(_match_labels(sdata, labels, annotated[labels], shapes, claimed))
    for image in shapes:
        if image not in claimed:
            logger.info("image %r has no annotated labels: exported without cells", image)
            tissues.append(_Tissue(_source_name(image), image, None, sorted(_coordinate_systems(sdata.images[image]))))
    unused = sorted(set(sdata.labels) - set(annotated))
    if unused:
        logger.warning("labels not annotated by any table are not exported: %s", ", ".join(unused))
    names = [t.source_name for t in tissues]
    if len(set(names)) != len(names):
        problems.add(f"image element names give duplicate sample names: {sorted(names)}")
    return sorted(tissues, key=lambda t: t.source_name)


def _resolve_mpp(sdata: Any, tissue: _Tissue, mpp: float | None) -> float:
    transformations = _coordinate_systems(sdata.images[tissue.image])
    scales = {cs: _scale_of(transformations[cs]) for cs in tissue.coordinate_systems if cs in transformations}
    found = {cs: s for cs, s in scales.items() if s is not None and not np.isnan(s)}
    distinct = sorted({round(s, 12) for s in found.values()})
    if mpp is not None:
        if distinct and not any(np.isclose(mpp, s, rtol=1e-6) for s in distinct):
            logger.warning("image %r: using mpp=%s although its transformations scale by %s", tissue.image, mpp, found)
        return float(mpp)
    if len(distinct) == 1:
        return float(distinct[0])
    if len(distinct) > 1:
        raise ExportInputError(
            f"image {tissue.image!r} has different scales in its coordinate systems {found}: microns per pixel is "
            "ambiguous; pass mpp=<microns per pixel>"
        )
    raise ExportInputError(
        f"microns per pixel unknown: image {tissue.image!r} has no Scale transformation (only "
        f"{ {cs: type(t).__name__ for cs, t in transformations.items()} }); pass mpp=<microns per pixel> "
        "(spora-sd export --mpp)"
    )


def _resolve_channels(sdata: Any, tissue: _Tissue, annotated: dict[str, _Annotation], modality: str) -> list[str]:
    element = sdata.images[tissue.image]
    names = channel_names(element)
    where = f"image {tissue.image!r}"
    if not layout.is_multiplex(modality):
        if modality == layout.HE and len(names) == 3:
            return list(layout.HE_CHANNELS)
        if modality.startswith(layout.IHC_PREFIX) and len(names) == 1:
            return [modality.removeprefix(layout.IHC_PREFIX)]
        raise ExportInputError(f"{where}: {len(names)} channels do not fit modality {modality!r}; pass modality=...")
    if not unnamed_channels(names):
        return check_channel_names(names, where)
    annotation = annotated.get(tissue.labels) if tissue.labels else None
    table = sdata.tables[annotation.table_name] if annotation else None
    if table is None or table.n_vars != len(names):
        what = "no table annotates its labels" if table is None else f"its table has {table.n_vars} variables"
        raise ExportInputError(
            f"{where}: channel names unknown: its c_coords are only the positions 0..{len(names) - 1} and {what}; "
            "name the channels, e.g. `sdata.images[name] = spatialdata.models.set_channel_names(sdata.images[name], "
            "[...])`, "
            "or annotate its labels with a table whose var_names are the channels in image order"
        )
    logger.debug("%s: channel names from the var_names of table %r", where, annotation.table_name)
    return check_channel_names(table.var_names, f"table {annotation.table_name!r} var_names")


def _patient_id(sdata: Any, tissue: _Tissue, annotated: dict[str, _Annotation], patient_key: str) -> str:
    """The raw patient identifier of one tissue, from the ``patient_key`` column of its table."""
    annotation = annotated.get(tissue.labels) if tissue.labels else None
    if annotation is None:
        raise ExportInputError(
            f"patient_key={patient_key!r}: image {tissue.image!r} has no annotated labels, so no table rows to read "
            "the patient from; drop that image or export without patient_key"
        )
    obs = sdata.tables[annotation.table_name].obs
    if patient_key not in obs.columns:
        raise ExportInputError(
            f"patient_key={patient_key!r} is not a column of table {annotation.table_name!r} "
            f"(columns: {list(map(str, obs.columns))})"
        )
    values = obs.loc[obs[annotation.region_key] == tissue.labels, patient_key]
    distinct = pd.unique(values.dropna().astype(str))
    if len(distinct) != 1 or values.isna().any():
        raise ExportInputError(
            f"patient_key={patient_key!r}: table {annotation.table_name!r} has {len(distinct)} distinct "
            f"values{' and missing values' if values.isna().any() else ''} for labels {tissue.labels!r}; "
            "a tissue needs exactly one patient"
        )
    return str(distinct[0])


def _patient_ids(
    sdata: Any, tissues: list[_Tissue], annotated: dict[str, _Annotation], patient_key: str | None, problems: Problems
) -> dict[str, str]:
    """Source name -> raw patient identifier (tissues whose patient is unknown are left out, their problem recorded)."""
    if patient_key is None:
        logger.info("no patient_key: each sample is its own patient (pass patient_key=<obs column> to group them)")
        return {t.source_name: t.source_name for t in tissues}
    out: dict[str, str] = {}
    for tissue in tissues:
        with problems.collect():
            out[tissue.source_name] = _patient_id(sdata, tissue, annotated, patient_key)
    return out


def _assign_tissue_ids(tissues: list[_Tissue], raw_patients: dict[str, str], dataset: str) -> None:
    by_patient: dict[str, list[_Tissue]] = defaultdict(list)
    for tissue in tissues:
        by_patient[raw_patients[tissue.source_name]].append(tissue)
    hashes: dict[str, str] = {}
    for raw, group in sorted(by_patient.items()):
        digest = layout.patient_hash(raw, dataset)
        if digest in hashes:
            raise ExportInputError(
                f"patients {hashes[digest]!r} and {raw!r} have the same 8-character hash {digest!r}; "
                "pass a different dataset=... or rename one patient"
            )
        hashes[digest] = raw
        for specimen, tissue in enumerate(sorted(group, key=lambda t: t.source_name)):
            tissue.tissue_id = layout.compose_tissue_id(dataset, digest, specimen)


def _table_cells(
    table: Any, table_name: str, annotation: _Annotation, region_to_tissue: dict[str, str], reserved: set[str]
) -> pd.DataFrame:
    """The rows of one annotating table that belong to exported tissues, as ``cells.parquet`` columns."""
    obs = table.obs
    keep = obs[annotation.region_key].astype(str).isin(region_to_tissue).to_numpy()
    sub = obs.loc[keep]
    ids = pd.to_numeric(sub[annotation.instance_key], errors="coerce")
    table_problems = Problems()
    if ids.isna().any() or not np.all(np.equal(np.mod(ids, 1), 0)):
        table_problems.add(
            f"table {table_name!r}: instance key {annotation.instance_key!r} must hold the integer labels of the "
            "cells in their mask"
        )
    annotations = sub.drop(columns=[annotation.region_key, annotation.instance_key])
    clash = sorted(set(map(str, annotations.columns)) & set(_CELL_KEYS))
    if clash:
        table_problems.add(
            f"table {table_name!r}: obs columns {clash} would be overwritten by the cohort's own keys; rename them"
        )
    var_names = [str(v) for v in table.var_names]
    clash = sorted(set(var_names) & (set(map(str, annotations.columns)) | reserved))
    if clash:
        table_problems.add(
            f"table {table_name!r}: var names {clash} are also obs columns; rename one of them before exporting"
        )
    table_problems.raise_if_any()
    x = table.X[keep]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype("float64")
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "tissue_id": sub[annotation.region_key].astype(str).map(region_to_tissue).to_numpy(),
                    "cell_id": ids.to_numpy().astype("int64"),
                }
            ),
            annotations.reset_index(drop=True).rename(columns=str),
            pd.DataFrame(x, columns=var_names),
        ],
        axis=1,
    )


def _cells_table(
    sdata: Any,
    annotated: dict[str, _Annotation],
    region_to_tissue: dict[str, str],
    reserved: set[str],
    problems: Problems,
) -> pd.DataFrame | None:
    parts = []
    for table_name in sorted({a.table_name for a in annotated.values()}):
        annotation = next(a for a in annotated.values() if a.table_name == table_name)
        with problems.collect():
            parts.append(_table_cells(sdata.tables[table_name], table_name, annotation, region_to_tissue, reserved))
    if not parts:
        return None
    cells = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return cells.sort_values(["tissue_id", "cell_id"], kind="stable").reset_index(drop=True)


def infer_plan(
    sdata: Any,
    *,
    dataset: str,
    mpp: float | None = None,
    modality: str = "imc",
    patient_key: str | None = None,
) -> ExportPlan:
    """Build an :class:`~spora_sd.convert.plan.ExportPlan` from a SpatialData without a reverse map.

    Parameters
    ----------
    sdata
        The SpatialData object (e.g. from ``spatialdata_io.steinbock``).
    dataset
        Dataset key of the cohort (checked).
    mpp
        Microns per pixel of every image; required when the transformations carry no ``Scale``.
    modality
        Modality of every image (``imc``, ``codex``, ``cycif``, ``mibi``, ``he``, ``ihc_<MARKER>``).
    patient_key
        Column of the cell table that holds the raw patient identifier.

    Returns
    -------
    The plan; nothing is written.

    Raises
    ------
    ExportInputError
        When something cannot be inferred; the message names the argument that supplies it. Every
        problem of every element and table is listed (``error.problems``), not only the first.

    Examples
    --------
    >>> import numpy as np, spatialdata as sd
    >>> from spatialdata.models import Image2DModel
    >>> img = Image2DModel.parse(np.zeros((2, 8, 8), "uint16"), dims=("c", "y", "x"), c_coords=["CD3E", "DNA1"])
    >>> plan = infer_plan(sd.SpatialData(images={"s1_image": img}), dataset="demo2025x", mpp=1.0)
    >>> plan.tissues_table[["tissue_id", "modality"]].values.tolist()
    [['demo2025x_148ea684_0000', 'imc']]
    """
    layout.check_dataset_key(dataset)
    layout.check_modality(modality)
    if not sdata.images:
        raise ExportInputError("the SpatialData has no image elements: nothing to export")
    # Every element and table is checked, and every problem is reported in one ExportInputError.
    problems = Problems()
    annotated, _ = _annotations(sdata, problems)
    tissues = _match_tissues(sdata, annotated, problems)
    raw_patients = _patient_ids(sdata, tissues, annotated, patient_key, problems)
    channels: dict[str, list[str]] = {}
    mpps: dict[str, float] = {}
    for tissue in tissues:
        with problems.collect():
            channels[tissue.source_name] = _resolve_channels(sdata, tissue, annotated, modality)
        with problems.collect():
            mpps[tissue.source_name] = _resolve_mpp(sdata, tissue, mpp)
    tissues = [t for t in tissues if t.source_name in raw_patients]
    with problems.collect():
        _assign_tissue_ids(tissues, raw_patients, dataset)
    region_to_tissue = {t.labels: t.tissue_id for t in tissues if t.labels and t.tissue_id}
    cells = _cells_table(sdata, annotated, region_to_tissue, set(_CELL_KEYS), problems)
    problems.raise_if_any()
    tissues.sort(key=lambda t: t.tissue_id)

    unnamed = [t.image for t in tissues if unnamed_channels(channel_names(sdata.images[t.image]))]
    if unnamed and layout.is_multiplex(modality):
        logger.info("channel names of %d image(s) with c_coords 0..C-1 come from their table's var_names", len(unnamed))
    multiplex = layout.is_multiplex(modality)
    panel = merge_panels(channels[t.source_name] for t in tissues) if multiplex else []

    plans = []
    for tissue in tissues:
        names = channels[tissue.source_name]
        ordered, order = panel_order(names, panel) if multiplex else (names, None)
        image = ImageSource(tissue.image, modality, mpps[tissue.source_name], tuple(ordered), order)
        plan = TissuePlan(tissue.tissue_id, images=[image])
        if tissue.labels:
            plan.masks.append(MaskSource(tissue.labels, INSTANCES, image.mpp))
            if cells is not None:
                plan.cell_ids = cells.loc[cells["tissue_id"] == tissue.tissue_id, "cell_id"].to_numpy()
        # The layout needs a tissue mask at every image resolution; an exported SpatialData has none,
        # so the whole acquired image counts as tissue (logged, documented).
        plan.full_tissue_masks.append((image.mpp, element_yx_shape(sdata.images[tissue.image])))
        plans.append(plan)
    logger.info("no tissue masks in the SpatialData: each image is covered by a full tissue mask")

    tissues_table = pd.DataFrame(
        {
            "tissue_id": [t.tissue_id for t in tissues],
            "patient_id": [layout.parse_tissue_id(t.tissue_id).patient_id for t in tissues],
            "specimen_id": [layout.parse_tissue_id(t.tissue_id).specimen_id for t in tissues],
            "modality": modality,
            "alignment": pd.Series([None] * len(tissues), dtype=object),
            f"mpp_{modality}": [mpps[t.source_name] for t in tissues],
            "source_name": [t.source_name for t in tissues],
        }
    )
    channel_tables, cpt = {}, {}
    if multiplex:
        var = _channel_var(sdata, annotated)
        channel_tables[modality] = channels_table(panel, var)
        cpt[modality] = channels_per_tissue_table(panel, {t.tissue_id: channels[t.source_name] for t in tissues})
    return ExportPlan(
        dataset=dataset,
        tissues=plans,
        tissues_table=tissues_table,
        cells_table=cells,
        channels=channel_tables,
        channels_per_tissue=cpt,
        source="inferred",
    )


def _channel_var(sdata: Any, annotated: dict[str, _Annotation]) -> pd.DataFrame | None:
    """The var columns of the annotating tables that the channels table knows (first table wins)."""
    frames = [sdata.tables[name].var for name in sorted({a.table_name for a in annotated.values()})]
    if not frames:
        return None
    var = pd.concat(frames)
    var.index = var.index.astype(str)
    return var[~var.index.duplicated()]
