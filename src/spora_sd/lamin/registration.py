"""Register a cohort (or any SpatialData) as a curated, versioned LaminDB artifact.

The flow of :func:`register`:

1. cohort path or name -> ``spora_sd.to_spatialdata`` (a SpatialData is taken as given);
2. ``sdata.attrs["bio"]``/``["tech"]`` are completed from the arguments, the cohort registry
   (:mod:`spora_sd.datasets.registry`) or the modalities, and every term (name, synonym or ontology id) is
   resolved against the offline ontologies. An unknown term stops here, before anything is saved;
3. ``ln.Artifact.from_spatialdata(..., key="spora/<dataset>.zarr")`` writes the store to the cache
   (with :func:`spora_sd.write_spatialdata`, linear in the number of elements where ``sdata.write`` is
   quadratic) and hashes it: the same content returns the existing artifact, changed content becomes
   a new version;
4. lamindb's ``SpatialDataCurator`` validates a *curation view*: the same elements, with ``attrs``
   reduced to canonical term names (the curator reads one string per field). The stored object keeps
   the user's ``attrs`` unchanged, so ``load`` returns exactly what was registered;
5. cell-type labels that no CL term fits (e.g. "tumor") are logged and kept as ULabels;
6. a new artifact is saved with a Transform (``spora_sd.lamin.register``) and a Run (the conversion),
   and annotated: links to the Tissue, Disease, Organism, ExperimentalFactor, CellType and ULabel
   records, plus ``dataset``, ``n_tissues`` and ``n_cells``.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    import spora_sd.lamin as sl
    artifact = sl.register("jackson2020")
    artifact.key
    # 'spora/jackson2020single.zarr'
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from spora_sd.convert.attrs import read_spora_attrs
from spora_sd.convert.element_names import CELL_TABLE, TISSUE_TABLE
from spora_sd.convert.store import write_spatialdata
from spora_sd.errors import CohortNotFoundError, MetadataError, SporaError
from spora_sd.lamin.instance import quiet
from spora_sd.lamin.ontologies import Term, assay_for_modality, resolve_term
from spora_sd.lamin.schema import CELL_TYPE_COLUMNS, SLOT_OBS, spora_schema
from spora_sd.layout import HE

if TYPE_CHECKING:
    import lamindb as ln
    from spatialdata import SpatialData

__all__ = ["KEY_PREFIX", "MetadataError", "artifact_key", "complete_attrs", "missing_fields", "register"]

logger = logging.getLogger(__name__)

#: Artifacts of spora cohorts live under this key prefix: ``spora/<dataset>.zarr``.
KEY_PREFIX = "spora/"
TRANSFORM_KEY = "spora_sd.lamin.register"
_BIO_FIELDS = ("tissue", "disease", "organism")
_TECH_FIELDS = ("assay",)


def artifact_key(dataset: str) -> str:
    """The artifact key of a dataset: ``spora/<dataset>.zarr``.

    Examples
    --------
    >>> artifact_key("jackson2020single")
    'spora/jackson2020single.zarr'
    """
    return f"{KEY_PREFIX}{dataset}.zarr"


def _as_spatialdata(cohort: Any) -> tuple[SpatialData, str | None]:
    from spatialdata import SpatialData

    if isinstance(cohort, SpatialData):
        return cohort, None
    if not isinstance(cohort, str | os.PathLike):
        raise TypeError(f"register() takes a cohort path, a cohort name or a SpatialData, not {type(cohort).__name__}")
    from spora_sd import to_spatialdata
    from spora_sd.datasets.registry import resolve_cohort

    path = resolve_cohort(cohort)
    started = time.perf_counter()
    sdata = to_spatialdata(path)
    logger.info("converted %s to SpatialData in %.1f s", path, time.perf_counter() - started)
    return sdata, str(path)


def _registry_entry(dataset: str | None) -> Any:
    from spora_sd.datasets.registry import cohort_info

    if dataset is None:
        return None
    try:
        return cohort_info(dataset)
    except CohortNotFoundError:
        return None


def _modalities(attrs: Mapping[str, Any]) -> list[str]:
    """``attrs["modalities"]``, else those of ``attrs["spora"]`` (:mod:`spora_sd.convert.attrs`)."""
    value = attrs.get("modalities")
    if value:
        return [str(m) for m in value]
    info = read_spora_attrs(attrs)
    return info.modalities if info is not None else []


def _read(section: Mapping[str, Any], field: str, where: str) -> tuple[str | None, str | None, str, str]:
    """(name, ontology id, where the name is, where the id is) of a field, written nested or flat."""
    value = section.get(field)
    if isinstance(value, Mapping):
        name, oid = value.get("name"), value.get("ontology_id")
        where_name, where_id = f"{where}[{field!r}]['name']", f"{where}[{field!r}]['ontology_id']"
    else:
        name, oid = value, section.get(f"{field}_ontology_id")
        where_name, where_id = f"{where}[{field!r}]", f"{where}[{field + '_ontology_id'!r}]"
    return (str(name) if name else None), (str(oid) if oid else None), where_name, where_id


def _write(section: dict[str, Any], field: str, term: Term) -> None:
    """Store a term in the style the section already uses (nested dict, or flat name + id)."""
    if isinstance(section.get(field), Mapping):
        section[field] = {"name": term.name, "ontology_id": term.ontology_id}
    else:
        section[field] = term.name
        section[f"{field}_ontology_id"] = term.ontology_id


def _resolve(field: str, name: str | None, oid: str | None, where_name: str, where_id: str) -> Term:
    if not oid:
        return resolve_term(field, str(name), where=where_name)
    term = resolve_term(field, oid, where=where_id)
    if name:
        try:
            named = resolve_term(field, name, where=where_name)
        except SporaError:
            logger.warning("%s: %r is not a term; using the ontology id %s (%s)", where_name, name, oid, term.name)
            return term
        if named.ontology_id != term.ontology_id:
            raise MetadataError(
                f"{where_name} = {name!r} ({named.ontology_id}) and {where_id} = {oid!r} ({term.name}) "
                "name different terms; fix one of them"
            )
    return term


def complete_attrs(
    attrs: Mapping[str, Any], overrides: Mapping[str, str | None], dataset: str | None = None
) -> tuple[dict[str, Any], dict[str, Term]]:
    """Fill ``bio``/``tech`` of a copy of ``attrs`` and resolve every term.

    Precedence: explicit ``overrides`` (arguments of :func:`register`), then what ``attrs`` holds,
    then the cohort registry entry of ``dataset``, then (assay only) the modalities.

    Parameters
    ----------
    attrs
        ``sdata.attrs``; not modified.
    overrides
        Field -> value (name, synonym or id) or None.
    dataset
        The dataset key, for the registry look-up.

    Returns
    -------
    tuple
        The completed attrs (a deep copy), and field -> resolved :class:`~spora_sd.lamin.ontologies.Term`.

    Raises
    ------
    MetadataError, TermNotFoundError, AmbiguousTermError
        A field is missing, contradicts itself, or names no term.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        attrs, terms = complete_attrs(
            {"dataset": "x2024y"}, {"tissue": "lung", "disease": "NSCLC", "organism": "human", "assay": "IMC"}
        )
        terms["disease"].ontology_id
        # 'MONDO:0005233'
    """
    out = copy.deepcopy(dict(attrs))
    entry = _registry_entry(dataset)
    terms: dict[str, Term] = {}
    for section_name, fields in (("bio", _BIO_FIELDS), ("tech", _TECH_FIELDS)):
        section = out.setdefault(section_name, {})
        if not isinstance(section, dict):
            raise MetadataError(f"sdata.attrs[{section_name!r}] must be a dict, not {type(section).__name__}")
        for field in fields:
            override = overrides.get(field)
            name, oid, where_name, where_id = _read(section, field, f"sdata.attrs[{section_name!r}]")
            if override is not None:
                term = resolve_term(field, override, where=f"the {field}= argument")
                _write(section, field, term)
            elif name or oid:
                term = _resolve(field, name, oid, where_name, where_id)
            elif entry is not None:
                registered = getattr(entry, field)
                where = f"the cohort registry ({entry.key}.{field})"
                term = _resolve(field, registered.name, registered.ontology_id, where, where)
                _write(section, field, term)
            elif field == "assay" and (assays := _assays_from_modalities(out)):
                term = resolve_term(field, assays[0], where="the cohort's modalities")
                _write(section, field, term)
            else:
                raise MetadataError(
                    f"{where_name} is missing and the cohort is not in the registry: pass {field}=... to register()"
                )
            terms[field] = term
    return out, terms


def missing_fields(attrs: Mapping[str, Any]) -> list[str]:
    """Label fields that ``attrs`` lacks and the registry / modalities cannot fill (pass them to register).

    Examples
    --------
    >>> missing_fields({"dataset": "x2024y", "bio": {"tissue": "lung"}, "modalities": ["imc"]})
    ['disease', 'organism']
    """
    entry = _registry_entry(attrs.get("dataset"))
    missing = []
    for section_name, fields in (("bio", _BIO_FIELDS), ("tech", _TECH_FIELDS)):
        section = attrs.get(section_name) or {}
        for field in fields:
            name, oid, _, _ = _read(section, field, section_name)
            if name or oid or entry is not None or (field == "assay" and _assays_from_modalities(attrs)):
                continue
            missing.append(field)
    return missing


def _assays_from_modalities(attrs: Mapping[str, Any]) -> list[str]:
    # one assay per artifact: with H&E next to a multiplex modality, the multiplex one describes it
    modalities = sorted(_modalities(attrs), key=lambda m: m == HE)
    return [a for a in (assay_for_modality(m) for m in modalities) if a]


def _with(
    sdata: SpatialData, *, attrs: Mapping[str, Any], tables: Mapping[str, Any] | None = None, cls: type | None = None
) -> SpatialData:
    """A new SpatialData (or ``cls``) that shares the elements of ``sdata`` (no copy of any data)."""
    from spatialdata import SpatialData

    return (cls or SpatialData)(
        images=dict(sdata.images),
        labels=dict(sdata.labels),
        points=dict(sdata.points),
        shapes=dict(sdata.shapes),
        tables=dict(sdata.tables if tables is None else tables),
        attrs=dict(attrs),
    )


@functools.cache
def _linear_writer_class() -> type:
    """A ``SpatialData`` whose ``write`` is :func:`spora_sd.write_spatialdata` (linear in the elements).

    ``Artifact.from_spatialdata`` writes an in-memory object to lamindb's cache with ``obj.write(path,
    overwrite=True)``, choosing that call by the class name, which this subclass keeps. Registering
    a folder written beforehand instead would make lamindb ask LaminHub whether the folder is in a
    known storage location (a network call for a local instance).
    """
    from spatialdata import SpatialData as Base

    class SpatialData(Base):  # the name lamindb dispatches on
        def write(self, file_path: Any, overwrite: bool = False, **kwargs: Any) -> None:
            if kwargs:  # options only spatialdata's writer knows
                super().write(file_path, overwrite=overwrite, **kwargs)
                return
            write_spatialdata(self, file_path, overwrite=overwrite)

    return SpatialData


def _cell_table(sdata: SpatialData) -> Any:
    if CELL_TABLE in sdata.tables:
        return sdata.tables[CELL_TABLE]
    others = [t for name, t in sdata.tables.items() if name != TISSUE_TABLE]
    return others[0] if len(others) == 1 else None


def _curation_view(sdata: SpatialData, terms: Mapping[str, Term]) -> SpatialData:
    import anndata as ad

    attrs = dict(sdata.attrs)
    attrs["bio"] = {f: terms[f].name for f in _BIO_FIELDS}
    attrs["tech"] = {f: terms[f].name for f in _TECH_FIELDS}
    # the schema names the cell table; a SpatialData without one (H&E only) gets an empty stand-in
    table = _cell_table(sdata)
    if table is None:
        table = ad.AnnData(obs=pd.DataFrame(index=pd.Index([], dtype=str)))
    return _with(sdata, attrs=attrs, tables={CELL_TABLE: table})


def _summary(sdata: SpatialData, dataset: str) -> dict[str, Any]:
    cells = _cell_table(sdata)
    tissues = sdata.tables.get(TISSUE_TABLE)
    if tissues is not None and "tissue_id" in tissues.obs:
        n_tissues = int(tissues.obs["tissue_id"].nunique())
    elif cells is not None and "tissue_id" in cells.obs:
        n_tissues = int(cells.obs["tissue_id"].nunique())
    else:  # one coordinate system per tissue
        n_tissues = len(sdata.coordinate_systems)
    return {"dataset": dataset, "n_tissues": n_tissues, "n_cells": 0 if cells is None else int(cells.n_obs)}


def _validated_curator(view: SpatialData, features: dict[str, Any]) -> Any:
    """A validated curator; cell-type labels without a CL term become ULabels (logged)."""
    import lamindb as ln

    schema = spora_schema()
    curator = ln.curators.SpatialDataCurator(view, schema, features=features)
    unmapped: dict[str, list[str]] = {}
    for slot, slot_curator in curator.slots.items():
        try:
            slot_curator.validate()
        except ln.errors.ValidationError:
            if slot != SLOT_OBS:
                raise  # terms were resolved before, so this is a bug or a schema clash: show lamindb's message
            for column, values in slot_curator.cat.non_validated.items():
                if column in CELL_TYPE_COLUMNS:
                    unmapped[column] = [str(v) for v in values]
    if unmapped:
        for column, values in unmapped.items():
            logger.warning(
                "%d %s label(s) match no Cell Ontology term and are kept as ULabels: %s",
                len(values),
                column,
                ", ".join(repr(v) for v in values),
            )
        labels = sorted({v for values in unmapped.values() for v in values})
        with quiet():
            ln.save(ln.ULabel.from_values(labels, create=True))
        curator = ln.curators.SpatialDataCurator(view, schema, features=features)
    curator.validate()
    return curator


def _transform() -> ln.Transform:
    import lamindb as ln

    from spora_sd._version import __version__

    latest = ln.Transform.filter(key=TRANSFORM_KEY, is_latest=True).one_or_none()
    if latest is not None and latest.version_tag == __version__:
        return latest
    return ln.Transform(
        key=TRANSFORM_KEY,
        kind="function",
        version=__version__,
        description="spora cohort -> SpatialData -> curated LaminDB artifact (spora_sd.lamin.register)",
        revises=latest,
    ).save()


def register(
    cohort: str | os.PathLike[str] | SpatialData,
    *,
    key: str | None = None,
    tissue: str | None = None,
    disease: str | None = None,
    organism: str | None = None,
    assay: str | None = None,
    description: str | None = None,
) -> ln.Artifact:
    """Register a cohort as a curated SpatialData artifact in the current LaminDB instance.

    Parameters
    ----------
    cohort
        A cohort folder, a cohort name or alias of the registry (``"jackson2020"``, looked for under
        ``$SPORA_DATASETS_DIR``), or a SpatialData (e.g. from ``spora_sd.to_spatialdata``).
    key
        Artifact key; default ``spora/<dataset>.zarr`` with the dataset key from ``sdata.attrs["dataset"]``.
    tissue, disease, organism, assay
        Override or fill ``sdata.attrs["bio"]``/``["tech"]``: a term name, a synonym or an ontology id
        (``"lung"``, ``"pulmo"``, ``"UBERON:0002048"``). Without them, the attrs, then the cohort
        registry, then (for the assay) the modalities are used.
    description
        Artifact description; default: the registry's citation when known.

    Returns
    -------
    lamindb.Artifact
        The new artifact (a new version when the key exists with other content), or the existing one
        when the same content was registered before.

    Raises
    ------
    TermNotFoundError
        A term is unknown (the message names the field, the value and close matches); nothing is saved.
    MetadataError
        A field is missing or its name and id disagree; nothing is saved.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        af = register(sdata, tissue="breast", disease="TNBC")
        af.tissues.first().ontology_id
        # 'UBERON:0000310'
    """
    import lamindb as ln

    started = time.perf_counter()
    sdata, source_path = _as_spatialdata(cohort)
    dataset = sdata.attrs.get("dataset") or (Path(source_path).name if source_path else None)
    if key is None and not dataset:
        raise MetadataError("sdata.attrs['dataset'] is missing: set it (the dataset key) or pass key=...")
    dataset = str(dataset or Path(str(key)).stem)
    overrides = {"tissue": tissue, "disease": disease, "organism": organism, "assay": assay}
    attrs, terms = complete_attrs(sdata.attrs, overrides, dataset)
    if dataset != sdata.attrs.get("dataset"):
        attrs["dataset"] = dataset
    # a shallow copy: writing the artifact sets the object's .path, which must not change the caller's
    # (of a class that lamindb writes with spora-sd's writer)
    to_store = _with(sdata, attrs=attrs, cls=_linear_writer_class())
    key = key or artifact_key(dataset)
    entry = _registry_entry(dataset)
    if description is None and entry is not None:
        description = entry.citation

    t0 = time.perf_counter()
    previous = ln.Artifact.filter(key=key, is_latest=True).one_or_none()
    # writes the zarr store to the cache (with spora-sd's writer: see _linear_writer_class) and hashes it
    # (nothing is saved in the instance yet); an identical store returns the saved artifact
    with quiet():  # lamindb's own notes ("returning artifact with same hash ..."); we log ours
        artifact = ln.Artifact.from_spatialdata(to_store, key=key, description=description, revises=previous, run=False)
    t1 = time.perf_counter()
    if not artifact._state.adding:
        logger.info("%s: same content as artifact %s (%s); nothing new saved", key, artifact.uid, artifact.key)
        return artifact
    curator = _validated_curator(_curation_view(to_store, terms), _summary(to_store, dataset))
    t2 = time.perf_counter()

    run = ln.Run(
        _transform(),
        params={"cohort": source_path or "<SpatialData>", "key": key, "dataset": dataset, **overrides},
        initiated_by_run=ln.context.run,
        status="started",
    ).save()
    artifact.run = run
    # the curator validated the view; it saves and annotates the artifact of the user's object
    curator._artifact = artifact
    with quiet():  # "returning schema with same hash" for every slot
        artifact = curator.save_artifact()
    run.finished_at = datetime.now(UTC)
    run._status_code = 0  # completed; lamindb's own flow() finishes runs the same way
    run.save()
    t3 = time.perf_counter()
    logger.info(
        "registered %s as %s (%s) in %.1f s: write + hash %.1f s, curation %.1f s, save + annotate %.1f s",
        dataset,
        artifact.uid,
        key,
        t3 - started,
        t1 - t0,
        t2 - t1,
        t3 - t2,
    )
    return artifact
