"""Register a cohort as a curated, versioned LaminDB artifact: in place (default) or as a SpatialData copy.

In place (``mode="cohort"``, the default for a cohort folder or name), :func:`register`:

1. resolves the cohort folder and fingerprints it without reading unchanged files
   (:mod:`spora_sd.lamin.fingerprint`: the content manifest, checked against file sizes and times);
2. under a per-key lock (:mod:`spora_sd.lamin.locking`), returns the latest artifact of the key
   ``spora/<dataset>`` when it has the same fingerprint and folder: re-registering unchanged
   content is a look-up;
3. otherwise reads the cohort's *tables* (:mod:`spora_sd.lamin.cohort_tables`: the cell table's
   cell-type columns, the panel, the tissue table; no image, no mask), completes and resolves the labels (arguments, then ``attrs``, then the cohort registry
   :mod:`spora_sd.datasets.registry`, then the modalities for the assay), and validates them. An
   unknown term stops here, before anything is saved;
4. makes the folder's storage location known to the instance (:mod:`spora_sd.lamin.storage`) and
   creates an artifact that points at the folder (no copy), with the fingerprint as its hash; changed
   content becomes a new version of the key;
5. annotates it (:mod:`spora_sd.lamin.annotation`): ontology links, ``dataset``, ``n_tissues``,
   ``n_cells``, ``stored_as="cohort"``, ``format_version``, Transform + Run.

As a copy (``mode="spatialdata"``, and always for a SpatialData object), step 1-4 become
``ln.Artifact.from_spatialdata(..., key="spora/<dataset>.zarr")``: the SpatialData is written to the
instance's storage (with :func:`spora_sd.write_spatialdata`, linear in the number of elements) and
hashed by LaminDB; the same content returns the existing artifact. The stored object keeps the
user's ``attrs`` with the labels filled in, so ``artifact.load()`` gives SpatialData directly.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    import spora_sd.lamin as sl
    artifact = sl.register("jackson2020")
    artifact.key, artifact.path
    # ('spora/jackson2020single', PosixPath('/data/spora/jackson2020single'))
    copy = sl.register("jackson2020", mode="spatialdata")
    copy.key
    # 'spora/jackson2020single.zarr'
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spora_sd.convert.attrs import FORMAT_VERSION, read_spora_attrs
from spora_sd.convert.store import write_spatialdata
from spora_sd.errors import CohortNotFoundError, InvalidArgumentError, MetadataError, SporaError
from spora_sd.lamin.annotation import (
    BIO_FIELDS,
    TECH_FIELDS,
    TRANSFORM_KEY,
    _with,
    annotate,
    linked_terms,
    summary,
    validate,
)
from spora_sd.lamin.instance import offline_hub_state, quiet, shared_storage
from spora_sd.lamin.locking import instance_lock
from spora_sd.lamin.ontologies import Term, assay_for_modality, resolve_term
from spora_sd.lamin.vitessce import attach_vitessce_config
from spora_sd.layout import HE

if TYPE_CHECKING:
    import lamindb as ln
    from spatialdata import SpatialData

__all__ = [
    "KEY_PREFIX",
    "MODES",
    "TRANSFORM_KEY",
    "MetadataError",
    "artifact_key",
    "cohort_key",
    "complete_attrs",
    "missing_fields",
    "register",
]

logger = logging.getLogger(__name__)

#: Artifacts of spora cohorts live under this key prefix: ``spora/<dataset>`` (in place) and
#: ``spora/<dataset>.zarr`` (SpatialData copies).
KEY_PREFIX = "spora/"
#: Registration modes: the cohort folder where it is, or a SpatialData copy in the instance's storage.
MODES = ("cohort", "spatialdata")
_BIO_FIELDS = BIO_FIELDS
_TECH_FIELDS = TECH_FIELDS


def cohort_key(dataset: str) -> str:
    """The artifact key of a dataset registered in place: ``spora/<dataset>``.

    Examples
    --------
    >>> cohort_key("jackson2020single")
    'spora/jackson2020single'
    """
    return f"{KEY_PREFIX}{dataset}"


def artifact_key(dataset: str) -> str:
    """The artifact key of a dataset's SpatialData copy: ``spora/<dataset>.zarr``.

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


def _mode(cohort: Any, mode: str | None) -> str:
    from spatialdata import SpatialData

    if mode is not None and mode not in MODES:
        raise InvalidArgumentError(f"mode={mode!r}: expected one of {list(MODES)}")
    if isinstance(cohort, SpatialData):
        if mode == "cohort":
            raise InvalidArgumentError(
                "mode='cohort' registers a cohort folder in place; a SpatialData object can only be copied "
                "(mode='spatialdata'): pass its cohort folder instead to register it in place"
            )
        return "spatialdata"
    return mode or "cohort"


def register(
    cohort: str | os.PathLike[str] | SpatialData,
    *,
    mode: str | None = None,
    key: str | None = None,
    tissue: str | None = None,
    disease: str | None = None,
    organism: str | None = None,
    assay: str | None = None,
    description: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ln.Artifact:
    """Register a cohort as a curated artifact of the current LaminDB instance, in place or as a copy.

    Parameters
    ----------
    cohort
        A cohort folder, a cohort name or alias of the registry (``"jackson2020"``, looked for under
        ``$SPORA_DATASETS_DIR``), or a SpatialData (e.g. from ``spora_sd.to_spatialdata``).
    mode
        ``"cohort"`` (default for a folder or name): register the folder where it is, no copy; its
        parent folder becomes a storage location of the instance when no location holds it yet.
        ``"spatialdata"`` (always for a SpatialData): write a SpatialData copy into the instance's
        storage, for users who expect ``artifact.load()`` to return SpatialData.
    key
        Artifact key; default ``spora/<dataset>`` in place, ``spora/<dataset>.zarr`` for a copy.
    tissue, disease, organism, assay
        Override or fill ``sdata.attrs["bio"]``/``["tech"]``: a term name, a synonym or an ontology id
        (``"lung"``, ``"pulmo"``, ``"UBERON:0002048"``). Without them, the attrs, then the cohort
        registry, then (for the assay) the modalities are used.
    description
        Artifact description; default: the registry's citation when known.
    storage_options
        For a remote cohort (``s3://bucket/prefix/<dataset>``, an rclone ``remote:path``, or a registry
        cohort that has no local copy): credentials and endpoint, as for :func:`spora_sd.open_cohort`.
        In place, only its tables are read (no image, no mask), and the bucket folder that holds it
        becomes a storage location. LaminDB itself reads credentials from the environment.

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

        af = register("/data/cohorts/x2024tnbc", tissue="breast", disease="TNBC")
        af.tissues.first().ontology_id
        # 'UBERON:0000310'
        register(sdata).key  # a SpatialData object: a copy
        # 'spora/x2024tnbc.zarr'
    """
    overrides = {"tissue": tissue, "disease": disease, "organism": organism, "assay": assay}
    offline_hub_state()
    if _mode(cohort, mode) == "cohort":
        artifact = _register_in_place(
            cohort, key=key, overrides=overrides, description=description, storage_options=storage_options
        )
    else:
        artifact = _register_copy(cohort, key=key, overrides=overrides, description=description)
    attach_vitessce_config(artifact)  # LaminHub's Vitessce button, where a hub can read the data (see vitessce.py)
    return artifact


def _description(dataset: str, description: str | None) -> str | None:
    entry = _registry_entry(dataset)
    return entry.citation if description is None and entry is not None else description


def _same_content(artifact: ln.Artifact, fingerprint: Any, location: str) -> bool:
    if (artifact.hash, artifact._hash_type) != (fingerprint.hash, fingerprint.hash_type):
        return False
    try:
        return artifact.path.as_posix().rstrip("/") == location.rstrip("/")
    except (OSError, ValueError):
        return False


def _register_in_place(
    cohort: str | os.PathLike[str],
    *,
    key: str | None,
    overrides: dict[str, str | None],
    description: str | None,
    storage_options: dict[str, Any] | None = None,
) -> ln.Artifact:
    import lamindb as ln

    from spora_sd.datasets.registry import resolve_cohort
    from spora_sd.io.location import child_name, is_remote
    from spora_sd.lamin.cohort_tables import tables_view
    from spora_sd.lamin.fingerprint import cohort_fingerprint, remote_fingerprint
    from spora_sd.lamin.storage import add_remote_storage, remote_root, storage_for

    started = time.perf_counter()
    location: Any = resolve_cohort(cohort, storage_options=storage_options)
    remote = is_remote(location)
    if remote:
        artifact_path = remote_root(location)  # s3://bucket/prefix/<dataset>[?endpoint_url=...]
        shown = artifact_path.split("?", 1)[0]
    else:
        location = Path(location).expanduser().resolve()
        artifact_path = shown = location.as_posix()
    dataset = child_name(location)
    key = key or cohort_key(dataset)
    for field, value in overrides.items():  # bad arguments fail even when nothing new would be saved
        if value is not None:
            resolve_term(field, value, where=f"the {field}= argument")
    with instance_lock(f"register:{key}"):  # a concurrent register of the same key waits here, then finds ours
        fingerprint = remote_fingerprint(location) if remote else cohort_fingerprint(location)
        latest = ln.Artifact.filter(key=key, is_latest=True).one_or_none()
        if latest is not None and _same_content(latest, fingerprint, shown):
            logger.info("%s: same content as artifact %s (%s); nothing new saved", shown, latest.uid, key)
            return latest
        t0 = time.perf_counter()
        sdata = tables_view(location)  # parquet tables only: no image pixel, no mask
        if latest is not None:  # a new version keeps the labels of the previous one unless told otherwise
            inherited = {f: t.ontology_id for f, t in linked_terms(latest).items() if overrides.get(f) is None}
            overrides = {**overrides, **inherited}
        attrs, terms = complete_attrs(sdata.attrs, overrides, dataset)
        t1 = time.perf_counter()
        curator = validate(sdata, terms, summary(sdata, dataset, "cohort", FORMAT_VERSION))
        if remote:
            add_remote_storage(remote_root(location.parent))
        else:
            storage_for(location)
        with quiet():  # lamindb's notes about new versions; we log ours
            artifact = ln.Artifact(
                artifact_path,
                key=key,
                description=_description(dataset, description),
                revises=latest,
                run=False,
                # the fingerprint stands for lamindb's hash, which would read every byte of the cohort
                _stats=fingerprint.stats(),
                # remote: the listing just showed the objects (and lamindb may lack the cohort's credentials)
                skip_check_exists=remote,
            )
        t2 = time.perf_counter()
        params = {"cohort": shown, "key": key, "dataset": dataset, "mode": "cohort", **overrides}
        artifact = annotate(artifact, curator, params)
    logger.info(
        "registered %s in place as %s (%s%s) in %.1f s: fingerprint %.1f s (%d file(s) read), tables + labels "
        "%.1f s, curation %.1f s, save + annotate %.1f s",
        shown,
        artifact.uid,
        key,
        f", new version of {latest.uid}" if latest is not None else "",
        time.perf_counter() - started,
        t0 - started,
        fingerprint.files_read,
        t1 - t0,
        t2 - t1,
        time.perf_counter() - t2,
    )
    return artifact


def _register_copy(
    cohort: str | os.PathLike[str] | SpatialData,
    *,
    key: str | None,
    overrides: dict[str, str | None],
    description: str | None,
) -> ln.Artifact:
    import lamindb as ln

    started = time.perf_counter()
    sdata, source_path = _as_spatialdata(cohort)
    dataset = sdata.attrs.get("dataset") or (Path(source_path).name if source_path else None)
    if key is None and not dataset:
        raise MetadataError("sdata.attrs['dataset'] is missing: set it (the dataset key) or pass key=...")
    dataset = str(dataset or Path(str(key)).stem)
    attrs, terms = complete_attrs(sdata.attrs, overrides, dataset)
    if dataset != sdata.attrs.get("dataset"):
        attrs["dataset"] = dataset
    # a shallow copy: writing the artifact sets the object's .path, which must not change the caller's
    # (of a class that lamindb writes with spora-sd's writer)
    to_store = _with(sdata, attrs=attrs, cls=_linear_writer_class())
    key = key or artifact_key(dataset)

    with instance_lock(f"register:{key}"):  # a concurrent register of the same key waits here, then finds ours
        t0 = time.perf_counter()
        previous = ln.Artifact.filter(key=key, is_latest=True).one_or_none()
        # writes the zarr store to the cache (with spora-sd's writer: see _linear_writer_class) and hashes
        # it (nothing is saved in the instance yet); an identical store returns the saved artifact
        with quiet():  # lamindb's own notes ("returning artifact with same hash ..."); we log ours
            artifact = ln.Artifact.from_spatialdata(
                to_store,
                key=key,
                description=_description(dataset, description),
                revises=previous,
                run=False,
                storage=shared_storage(),  # a shared instance's bucket; None: the default storage
            )
        t1 = time.perf_counter()
        if not artifact._state.adding:
            logger.info("%s: same content as artifact %s (%s); nothing new saved", key, artifact.uid, artifact.key)
            return artifact
        curator = validate(to_store, terms, summary(to_store, dataset, "spatialdata"))
        t2 = time.perf_counter()
        params = {"cohort": source_path or "<SpatialData>", "key": key, "dataset": dataset, "mode": "spatialdata"}
        artifact = annotate(artifact, curator, {**params, **overrides})
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
