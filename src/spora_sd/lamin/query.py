"""Find registered cohorts by biology, load them, export them back to spora cohorts.

:func:`search` resolves each criterion (a name, a synonym or an ontology id) against the offline
ontologies and includes the term's descendants: ``disease="breast carcinoma"`` finds a cohort
annotated with *triple-negative breast carcinoma*. This works on the saved records alone, because
saving an ontology record saves its ancestors too.

The same annotations are plain lamindb links, so lamindb queries work as well::

    ln.Artifact.filter(tissues__name="lung", diseases__ontology_id="MONDO:0005233")
    ln.Artifact.filter(n_cells__gt=100_000)

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    import spora_sd.lamin as sl
    sl.search(tissue="breast", disease="breast carcinoma")
    # key                   uid         dataset  tissue  ...
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from spora_sd.errors import ArtifactNotFoundError, TermNotFoundError
from spora_sd.lamin.annotation import BIO_FIELDS, LINKS, TECH_FIELDS, linked_terms
from spora_sd.lamin.ontologies import registry, resolve_term
from spora_sd.lamin.registration import KEY_PREFIX, artifact_key, cohort_key

if TYPE_CHECKING:
    import lamindb as ln
    from spatialdata import SpatialData

__all__ = ["SEARCH_COLUMNS", "ArtifactNotFoundError", "export", "get_artifact", "load", "search"]

logger = logging.getLogger(__name__)

#: Columns of the table that :func:`search` returns.
SEARCH_COLUMNS = [
    "key",
    "uid",
    "dataset",
    "tissue",
    "disease",
    "organism",
    "assay",
    "n_tissues",
    "n_cells",
    "stored_as",
]
_LINKS = LINKS


_UID = re.compile(r"^[A-Za-z0-9]{16}(?:[A-Za-z0-9]{4})?$")


def _matching_ids(field: str, value: str, descendants: bool) -> tuple[str, list[int]]:
    """(link name, ids of the records that satisfy the criterion)."""
    import lamindb as ln

    try:
        term = resolve_term(field, value)
    except TermNotFoundError:
        if field != "cell_type":
            raise
        # cell-type labels without a CL term were kept as ULabels at registration
        labels = ln.ULabel.filter(name__iexact=str(value).strip())
        if not labels.exists():
            raise
        return "ulabels", list(labels.values_list("id", flat=True))
    record = registry(field).filter(ontology_id=term.ontology_id).one_or_none()
    if record is None:
        # every saved record comes with its ancestors, so no artifact has this term or a descendant
        return _LINKS[field], []
    ids = [record.id]
    if descendants and hasattr(record, "query_children"):
        ids += list(record.query_children().values_list("id", flat=True))
    return _LINKS[field], ids


def _joined(values: Any) -> Any:
    if isinstance(values, list | tuple | set):
        return ", ".join(sorted(str(v) for v in values))
    return values


def search(
    tissue: str | None = None,
    disease: str | None = None,
    assay: str | None = None,
    organism: str | None = None,
    cell_type: str | None = None,
    *,
    descendants: bool = True,
    all_versions: bool = False,
) -> pd.DataFrame:
    """Registered cohorts that match every given criterion.

    Parameters
    ----------
    tissue, disease, assay, organism, cell_type
        A term name, a synonym or an ontology id; None matches anything. A ``cell_type`` without a
        CL term (e.g. ``"tumor"``) matches the ULabel kept at registration.
    descendants
        Include the descendants of each term (a cohort of *lung adenocarcinoma* matches
        ``disease="lung carcinoma"``).
    all_versions
        List every version, not only the latest of each key.

    Returns
    -------
    pandas.DataFrame
        One row per artifact, columns :data:`SEARCH_COLUMNS`, sorted by key: cohorts registered in
        place (``stored_as="cohort"``) and SpatialData copies (``"spatialdata"``) alike.

    Raises
    ------
    TermNotFoundError
        A criterion is no term of its ontology (the message lists close matches).

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        search(tissue="pulmo")
        search(disease="MONDO:0004989", cell_type="T cell")
    """
    import lamindb as ln

    query = ln.Artifact.filter(key__startswith=KEY_PREFIX)
    if not all_versions:
        query = query.filter(is_latest=True)
    criteria = {"tissue": tissue, "disease": disease, "assay": assay, "organism": organism, "cell_type": cell_type}
    for field, value in criteria.items():
        if value is None:
            continue
        link, ids = _matching_ids(field, value, descendants)
        query = query.filter(**{f"{link}__id__in": ids})
    found = list(query.distinct().order_by("key", "created_at").values_list("id", "key", "uid"))
    values = _feature_values([pk for pk, _, _ in found])
    rows = []
    for pk, key, uid in found:
        row = {"key": key, "uid": uid}
        row.update({col: _joined(values.get(pk, {}).get(col)) for col in SEARCH_COLUMNS[2:]})
        rows.append(row)
    return pd.DataFrame(rows, columns=SEARCH_COLUMNS)


def _feature_values(ids: list[int]) -> dict[int, dict[str, Any]]:
    """artifact id -> feature name -> value(s), for many artifacts in a few queries.

    ``artifact.features.get_values()`` costs several queries per artifact (about 30 ms each here):
    with a hundred cohorts that alone would take seconds. The features of a spora artifact are
    ontology labels (links to bionty records, named by feature) and plain values (JSON).
    """
    import lamindb as ln

    out: dict[int, dict[str, Any]] = {pk: {} for pk in ids}
    if not ids:
        return out
    for feature in (*BIO_FIELDS, *TECH_FIELDS):
        records = registry(feature)
        # the record's link table to artifacts (bionty's ArtifactTissue, ...), named by the record's model
        link_model = records.links_artifact.rel.related_model
        label = records._meta.model_name
        rows = link_model.objects.filter(artifact_id__in=ids, feature__name=feature).values_list(
            "artifact_id", f"{label}__name"
        )
        for pk, name in rows:
            out[pk].setdefault(feature, []).append(name)
    json_links = ln.models.JsonValue.objects.filter(links_artifact__artifact_id__in=ids).values_list(
        "links_artifact__artifact_id", "feature__name", "value"
    )
    for pk, name, value in json_links:
        if pk in out:
            out[pk][name] = value
    for row in out.values():  # one label: the value itself, as get_values() gives it
        for feature in (*BIO_FIELDS, *TECH_FIELDS):
            if isinstance(row.get(feature), list) and len(row[feature]) == 1:
                row[feature] = row[feature][0]
    return out


def get_artifact(ref: Any) -> ln.Artifact:
    """The artifact for a uid, a key, or a dataset key (latest version).

    Parameters
    ----------
    ref
        An Artifact, a uid (16 characters: latest version of that artifact; 20: that version), a key
        (``"spora/jackson2020single"``, ``"spora/jackson2020single.zarr"``) or a dataset key
        (``"jackson2020single"``: the cohort registered in place or its copy, the newer when both exist).

    Returns
    -------
    lamindb.Artifact

    Raises
    ------
    ArtifactNotFoundError
        Nothing matches; the message lists the registered keys.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        get_artifact("jackson2020single").key
        # 'spora/jackson2020single.zarr'
    """
    import lamindb as ln

    if isinstance(ref, ln.Artifact):
        # fetched again: an artifact object fresh from register() would load its in-memory copy
        return ln.Artifact.get(uid=ref.uid)
    text = os.fspath(ref) if isinstance(ref, os.PathLike) else str(ref)
    if _UID.match(text):
        found = ln.Artifact.filter(uid__startswith=text).order_by("-created_at").first()
        if found is not None:
            return found
    # a dataset key: in place (spora/<dataset>) or copied (spora/<dataset>.zarr), the newer when both
    keys = [text] if text.startswith(KEY_PREFIX) else [cohort_key(text), artifact_key(text)]
    found = ln.Artifact.filter(key__in=keys, is_latest=True).order_by("-created_at").first()
    if found is None:
        known = sorted(ln.Artifact.filter(key__startswith=KEY_PREFIX, is_latest=True).values_list("key", flat=True))
        raise ArtifactNotFoundError(
            f"no registered cohort {text!r} (looked for a uid or the key {' or '.join(keys)}); registered: {known}"
        )
    return found


def load(ref: Any) -> SpatialData:
    """Load a registered cohort as SpatialData (images stay lazy).

    Parameters
    ----------
    ref
        See :func:`get_artifact`.

    Returns
    -------
    spatialdata.SpatialData
        A cohort registered in place: ``spora_sd.to_spatialdata`` of its folder, with the registered
        labels in ``attrs["bio"]``/``["tech"]``. A copy: the SpatialData store in the instance's storage.

    Raises
    ------
    ArtifactNotFoundError
        Nothing matches, or an older version of a cohort registered in place is asked for: its
        folder now holds the latest version's content.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        sdata = load("jackson2020single")
    """
    import lamindb as ln

    artifact = get_artifact(ref)
    if artifact.otype == "SpatialData":
        # count the load as an input of the user's run only when one is being tracked
        return artifact.load(is_run_input=None if ln.context.run is not None else False)
    return _load_in_place(artifact)


def _labels(artifact: ln.Artifact) -> tuple[dict[str, str], dict[str, str]]:
    """``bio`` and ``tech`` attrs (name and ontology id of each field) from the artifact's links."""
    bio: dict[str, str] = {}
    tech: dict[str, str] = {}
    for field, term in linked_terms(artifact).items():
        section = tech if field in TECH_FIELDS else bio
        section[field] = term.name
        section[f"{field}_ontology_id"] = term.ontology_id
    return bio, tech


def _load_in_place(artifact: ln.Artifact) -> SpatialData:
    from spora_sd import to_spatialdata

    if not artifact.is_latest:
        latest = artifact.versions.filter(is_latest=True).first()
        raise ArtifactNotFoundError(
            f"{artifact.key} version {artifact.uid} was registered in place and its folder has changed since: "
            f"it now holds version {latest.uid if latest else '?'}; load that one"
        )
    bio, tech = _labels(artifact)
    if artifact.storage.type == "local":
        return to_spatialdata(Path(artifact.path.as_posix()), bio=bio, tech=tech)
    # a cohort in a bucket: LaminDB's path carries the endpoint; credentials come from the environment
    return to_spatialdata(artifact.path, bio=bio, tech=tech)


def export(ref: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write a registered cohort back to a spora cohort folder (through ``spora_sd.from_spatialdata``).

    Parameters
    ----------
    ref
        See :func:`get_artifact`.
    path
        The cohort folder to write; its name should be the dataset key.
    **kwargs
        Passed to :func:`spora_sd.from_spatialdata` (``overwrite``, ``standardization``, ``tiling``, ...).

    Returns
    -------
    Path
        The cohort folder.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        export("jackson2020single", "out/jackson2020single")
    """
    from spora_sd import from_spatialdata

    return Path(from_spatialdata(load(ref), path, **kwargs))
