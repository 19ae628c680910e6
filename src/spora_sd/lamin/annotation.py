"""Curate and annotate a new artifact: ontology links, cohort features, lineage (both registration modes).

An artifact of a cohort, copied (a SpatialData store) or registered in place (the cohort folder),
gets the same annotations from :func:`annotate`:

- lamindb's ``SpatialDataCurator`` validates a *curation view* of the cohort: the cell table's
  cell-type columns (each combination of values once, not once per cell) and markers, with
  ``attrs`` reduced to canonical term names (the curator reads one string per field). Images are
  never read: in place, the view holds the tables only;
- cell-type labels that no CL term fits (e.g. "tumor") are logged and kept as ULabels;
- the artifact is saved with a Transform (``spora_sd.lamin.register``) and a Run, and linked to
  the Tissue, Disease, Organism, ExperimentalFactor, CellType and ULabel records, with the
  features ``dataset``, ``n_tissues``, ``n_cells``, ``stored_as`` and ``format_version``.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    artifact = annotate(artifact, sdata, terms, summary(sdata, "x2024y", "cohort"), params={})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from spora_sd.convert.attrs import read_spora_attrs
from spora_sd.convert.element_names import CELL_TABLE, TISSUE_TABLE
from spora_sd.lamin.instance import quiet
from spora_sd.lamin.ontologies import Term
from spora_sd.lamin.schema import CELL_TYPE_COLUMNS, SLOT_OBS, spora_schema

if TYPE_CHECKING:
    import lamindb as ln
    from spatialdata import SpatialData

__all__ = [
    "BIO_FIELDS",
    "STORED_AS",
    "TECH_FIELDS",
    "TRANSFORM_KEY",
    "LINKS",
    "annotate",
    "cell_table",
    "linked_terms",
    "summary",
    "validate",
]

logger = logging.getLogger(__name__)

TRANSFORM_KEY = "spora_sd.lamin.register"
BIO_FIELDS = ("tissue", "disease", "organism")
TECH_FIELDS = ("assay",)
#: Values of the ``stored_as`` feature: the cohort folder where it is, or a SpatialData copy.
STORED_AS = ("cohort", "spatialdata")


def cell_table(sdata: SpatialData) -> Any:
    """The cell table (``cells``, else the only table that is not ``tissues``), or None."""
    if CELL_TABLE in sdata.tables:
        return sdata.tables[CELL_TABLE]
    others = [t for name, t in sdata.tables.items() if name != TISSUE_TABLE]
    return others[0] if len(others) == 1 else None


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


def _curation_view(sdata: SpatialData, terms: Mapping[str, Term]) -> SpatialData:
    import warnings

    import anndata as ad

    attrs = dict(sdata.attrs)
    attrs["bio"] = {f: terms[f].name for f in BIO_FIELDS}
    attrs["tech"] = {f: terms[f].name for f in TECH_FIELDS}
    # the schema names the cell table; a SpatialData without one (H&E only) gets an empty stand-in
    table = cell_table(sdata)
    if table is None:
        table = ad.AnnData(obs=pd.DataFrame(index=pd.Index([], dtype=str)))
    else:
        # the curator validates label values, once each: one row per combination of the cell-type
        # columns instead of one per cell (lamindb flattens every value; 25 s for 600,000 cells here)
        columns = [c for c in CELL_TYPE_COLUMNS if c in table.obs.columns]
        obs = table.obs[columns].drop_duplicates().reset_index(drop=True)
        obs.index = obs.index.astype(str)
        table = ad.AnnData(obs=obs, var=table.var)
    with warnings.catch_warnings():
        # in place, the view has the tables only: spatialdata warns that their labels are not there
        warnings.filterwarnings("ignore", "The table is annotating", UserWarning)
        return _with(sdata, attrs=attrs, tables={CELL_TABLE: table})


def summary(sdata: SpatialData, dataset: str, stored_as: str, format_version: str | None = None) -> dict[str, Any]:
    """The external features of a cohort: dataset, n_tissues, n_cells, stored_as, format_version.

    ``format_version`` defaults to that of ``sdata.attrs["spora"]``; a cohort registered in place is
    read with the current one (:data:`spora_sd.convert.attrs.FORMAT_VERSION`).

    Examples
    --------
    >>> from spatialdata import SpatialData
    >>> summary(SpatialData(attrs={}), "x2024y", "cohort")
    {'dataset': 'x2024y', 'n_tissues': 0, 'n_cells': 0, 'stored_as': 'cohort', 'format_version': 'unknown'}
    """
    cells = cell_table(sdata)
    tissues = sdata.tables.get(TISSUE_TABLE)
    if tissues is not None and "tissue_id" in tissues.obs:
        n_tissues = int(tissues.obs["tissue_id"].nunique())
    elif cells is not None and "tissue_id" in cells.obs:
        n_tissues = int(cells.obs["tissue_id"].nunique())
    else:  # one coordinate system per tissue
        n_tissues = len(sdata.coordinate_systems)
    if format_version is None:
        info = read_spora_attrs(sdata.attrs)
        format_version = info.format_version if info is not None else "unknown"
    return {
        "dataset": dataset,
        "n_tissues": n_tissues,
        "n_cells": 0 if cells is None else int(cells.n_obs),
        "stored_as": stored_as,
        "format_version": format_version,
    }


#: field -> the artifact's many-to-many link to the records of that field
LINKS = {
    "tissue": "tissues",
    "disease": "diseases",
    "organism": "organisms",
    "assay": "experimental_factors",
    "cell_type": "cell_types",
}


def linked_terms(artifact: ln.Artifact) -> dict[str, Term]:
    """The tissue, disease, organism and assay an artifact was annotated with (first of each).

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        linked_terms(artifact)["tissue"]
        # Term(field='tissue', ontology_id='UBERON:0002048', name='lung')
    """
    out = {}
    for field in (*BIO_FIELDS, *TECH_FIELDS):
        record = getattr(artifact, LINKS[field]).order_by("id").first()
        if record is not None:
            out[field] = Term(field, record.ontology_id, record.name)
    return out


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
        description="spora cohort -> curated LaminDB artifact, in place or as a SpatialData copy",
        revises=latest,
    ).save()


def validate(sdata: SpatialData, terms: Mapping[str, Term], features: dict[str, Any]) -> Any:
    """Validate the curation view of ``sdata`` before anything is saved; returns the curator.

    Raises lamindb's ``ValidationError`` for a schema clash; unknown cell types become ULabels.
    """
    return _validated_curator(_curation_view(sdata, terms), features)


def annotate(artifact: ln.Artifact, curator: Any, params: dict[str, Any]) -> ln.Artifact:
    """Save a new (unsaved) artifact with lineage and the curator's annotations.

    Parameters
    ----------
    artifact
        The artifact made by ``ln.Artifact(...)`` or ``ln.Artifact.from_spatialdata(...)``, not saved.
    curator
        From :func:`validate`.
    params
        Stored as the Run's parameters (cohort location, key, mode, arguments).

    Returns
    -------
    lamindb.Artifact
        The saved, annotated artifact.
    """
    import lamindb as ln

    run = ln.Run(_transform(), params=params, initiated_by_run=ln.context.run, status="started").save()
    artifact.run = run
    # the curator validated the view; it saves and annotates the artifact of the user's object
    curator._artifact = artifact
    with quiet():  # "returning schema with same hash" for every slot
        artifact = curator.save_artifact()
    run.finished_at = datetime.now(UTC)
    run._status_code = 0  # completed; lamindb's own flow() finishes runs the same way
    run.save()
    return artifact
