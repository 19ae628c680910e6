"""Offline ontologies in bionty, and turning names, synonyms and ids into ontology terms.

:func:`setup_ontologies` loads the released UBERON, MONDO, CL, EFO (plus the OBI imaging assays of
``assays.csv``) and NCBITaxon term tables that ``cellxgene-ontology-guide`` ships into the current
LaminDB instance as bionty *sources*, and marks them currently used. From then on bionty's own
look-ups (``bt.Tissue.from_source(name="lung")``), lamindb's curators and :func:`resolve_term` work
without a network connection.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    import spora_sd.lamin as sl
    sl.setup_ontologies()
    sl.resolve_term("disease", "TNBC")
    # Term(field='disease', ontology_id='MONDO:0005494', name='triple-negative breast carcinoma')
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from spora_sd.errors import AmbiguousTermError, InvalidArgumentError, SporaError, TermNotFoundError
from spora_sd.layout import IHC_PREFIX
from spora_sd.ontologies.files import ontology_frame, ontology_version

if TYPE_CHECKING:
    from lamindb.models import SQLRecord

__all__ = [
    "FIELDS",
    "AmbiguousTermError",
    "Term",
    "TermNotFoundError",
    "assay_for_modality",
    "assay_table",
    "registry",
    "resolve_term",
    "setup_ontologies",
]

logger = logging.getLogger(__name__)

_ASSAYS_FILE = Path(__file__).with_name("assays.csv")
#: EFO's own term for immunohistochemistry; the spora modalities ``ihc_<MARKER>`` map to it.
IHC_ASSAY = "EFO:0022943"
_CURIE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):(\S+)$")


@dataclass(frozen=True)
class _Spec:
    registry: str  # class name in bionty
    ontology: str  # file in cellxgene-ontology-guide


#: Metadata field -> bionty registry and released ontology that backs it.
_SPECS: dict[str, _Spec] = {
    "tissue": _Spec("Tissue", "UBERON"),
    "disease": _Spec("Disease", "MONDO"),
    "organism": _Spec("Organism", "NCBITaxon"),
    "assay": _Spec("ExperimentalFactor", "EFO"),
    "cell_type": _Spec("CellType", "CL"),
}
FIELDS = tuple(_SPECS)


class Term(NamedTuple):
    """An ontology term that a user's value resolved to."""

    field: str
    ontology_id: str
    name: str


def registry(field: str) -> type[SQLRecord]:
    """The bionty registry that holds the terms of a metadata field.

    Parameters
    ----------
    field
        One of :data:`FIELDS`: ``tissue``, ``disease``, ``organism``, ``assay``, ``cell_type``.

    Returns
    -------
    type
        E.g. ``bionty.Tissue`` for ``"tissue"``.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        registry("assay").__name__
        # 'ExperimentalFactor'
    """
    import bionty as bt

    return getattr(bt, _spec(field).registry)


def _spec(field: str) -> _Spec:
    try:
        return _SPECS[field]
    except KeyError:
        raise InvalidArgumentError(f"unknown metadata field {field!r}; expected one of {list(FIELDS)}") from None


@functools.cache
def assay_table() -> pd.DataFrame:
    """The cited table of imaging assays that EFO lacks (``spora_sd/lamin/assays.csv``).

    Returns
    -------
    pandas.DataFrame
        Columns ``ontology_id``, ``name``, ``synonyms``, ``modality``, ``source``.

    Examples
    --------
    >>> assay_table().set_index("modality").loc["imc", "ontology_id"]
    'OBI:0003096'
    """
    return pd.read_csv(_ASSAYS_FILE, comment="#", dtype=str)


def assay_for_modality(modality: str) -> str | None:
    """The assay term id of a spora modality, e.g. ``"imc"`` -> ``"OBI:0003096"``.

    Parameters
    ----------
    modality
        A spora modality folder name (``imc``, ``mibi``, ``codex``, ``cycif``, ``he``, ``ihc_<MARKER>``).

    Returns
    -------
    str or None
        The ontology id, or None for a modality without a known assay.

    Examples
    --------
    >>> assay_for_modality("ihc_CD3E")
    'EFO:0022943'
    """
    if modality.startswith(IHC_PREFIX):
        return IHC_ASSAY
    match = assay_table().loc[lambda t: t["modality"] == modality, "ontology_id"]
    return None if match.empty else str(match.iloc[0])


def _source_version(field: str) -> str:
    version = ontology_version(_spec(field).ontology)
    if field == "assay":
        # the assay rows are part of the source: a changed table must become a new source version
        digest = hashlib.sha256(_ASSAYS_FILE.read_bytes()).hexdigest()[:8]
        version = f"{version}+spora-assays-{digest}"
    return version


def _source_frame(field: str) -> pd.DataFrame:
    df = ontology_frame(_spec(field).ontology)
    if field == "assay":
        extra = assay_table()
        rows = pd.DataFrame(
            {
                "ontology_id": extra["ontology_id"],
                "name": extra["name"],
                "synonyms": extra["synonyms"],
                "description": "OBI term; source: " + extra["source"],
                "parents": [[] for _ in range(len(extra))],
            }
        )
        df = pd.concat([df, rows], ignore_index=True)
    return df


def setup_ontologies(fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load the shipped ontologies into the current instance as bionty sources, marked currently used.

    Safe to call again: a source that is already present (same ontology release) is only re-marked
    as currently used, which takes milliseconds. The first call parses the files (about 6 s, most of
    it NCBITaxon) and stores each term table as a parquet artifact of the instance.

    Parameters
    ----------
    fields
        Subset of :data:`FIELDS` to set up; all by default.

    Returns
    -------
    dict of str to bionty.Source
        Field -> the source now in use.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        import spora_sd.lamin as sl
        sources = sl.setup_ontologies()
        sources["tissue"].name, sources["tissue"].version
        # ('uberon', 'v2026-04-01')
    """
    import bionty as bt

    result = {}
    for field in fields or FIELDS:
        reg = registry(field)
        entity = reg.__get_name_with_module__()
        name = _spec(field).ontology.lower()
        version = _source_version(field)
        source = bt.Source.filter(entity=entity, name=name, version=version, organism="all").one_or_none()
        if source is None or source.dataframe_artifact_id is None:
            logger.info("loading %s %s into %s", _spec(field).ontology, version, entity)
            new = bt.Source(entity=entity, name=name, version=version, organism="all", currently_used=True)
            source = reg.add_source(new, df=_source_frame(field))
        # exactly one currently used source per entity, so that bionty never falls back to a source
        # it would have to download (e.g. Ensembl's organism list)
        bt.Source.filter(entity=entity, currently_used=True).exclude(id=source.id).update(currently_used=False)
        if not source.currently_used:
            source.currently_used = True
            source.save()
        result[field] = source
    return result


class _TermIndex:
    """Names, synonyms and ids of one source, for exact (case-insensitive) look-ups."""

    def __init__(self, field: str, df: pd.DataFrame) -> None:
        self.field = field
        self.names: dict[str, str] = {}  # ontology id -> name
        self.by_name: dict[str, str] = {}  # lower-case name -> ontology id
        self.by_synonym: dict[str, list[str]] = {}  # lower-case synonym -> ontology ids
        self.prefixes: dict[str, str] = {}  # lower-case CURIE prefix -> as the ontology spells it
        for oid, name, synonyms in zip(df["ontology_id"], df["name"], df["synonyms"], strict=True):
            self.names[oid] = name
            prefix = oid.split(":", 1)[0]
            self.prefixes.setdefault(prefix.lower(), prefix)
            self.by_name.setdefault(name.lower(), oid)
            if isinstance(synonyms, str):
                for syn in synonyms.split("|"):
                    if syn:
                        ids = self.by_synonym.setdefault(syn.lower(), [])
                        if oid not in ids:
                            ids.append(oid)

    def term(self, oid: str) -> Term:
        return Term(self.field, oid, self.names[oid])

    def suggestions(self, value: str, n: int = 5) -> list[str]:
        lower = value.lower()
        candidates = list(self.by_name) + list(self.by_synonym)
        found: list[str] = []
        for match in difflib.get_close_matches(lower, candidates, n=3 * n, cutoff=0.7):
            oid = self.by_name.get(match) or self.by_synonym[match][0]
            name = self.names[oid]
            if name not in found:
                found.append(name)
        return found[:n]


def _source_index(field: str) -> tuple[_TermIndex, str]:
    import lamindb as ln

    reg = registry(field)
    source = _offline_source(reg)
    if source is None:
        # e.g. an instance made with plain `lamin init --modules bionty`: its sources are bionty's
        # online ones; load the shipped release instead of failing (a few seconds, once per instance)
        logger.info(
            "the LaminDB instance has no offline %s source for %s yet: loading the shipped ontologies",
            _spec(field).ontology,
            field,
        )
        setup_ontologies()
        source = _offline_source(reg)
        if source is None:  # pragma: no cover - setup_ontologies just made it
            raise SporaError(f"could not load the offline {_spec(field).ontology} source for {field}")
    key = (ln.setup.settings.instance.slug, source.uid)
    return _cached_index(field, key, source), f"{_spec(field).ontology} {source.version}"


def _offline_source(reg: type[SQLRecord]) -> Any:
    """The currently used source of a registry when it is one of ours (its term table is stored)."""
    import bionty as bt

    source = bt.Source.filter(entity=reg.__get_name_with_module__(), currently_used=True).first()
    return None if source is None or source.dataframe_artifact_id is None else source


_INDEX_CACHE: dict[tuple[str, str, str], _TermIndex] = {}


def _cached_index(field: str, key: tuple[str, str], source: Any) -> _TermIndex:
    # a source's table never changes (a new release is a new source), so its index can be kept
    cache_key = (field, *key)
    if cache_key not in _INDEX_CACHE:
        df = source.dataframe_artifact.load(is_run_input=False)
        _INDEX_CACHE[cache_key] = _TermIndex(field, df)
    return _INDEX_CACHE[cache_key]


def _is_species(name: str) -> bool:
    # "Mus musculus" (a binomial), not "Mus <genus>" or "Rattus"
    parts = name.split()
    return len(parts) == 2 and "<" not in name and parts[1].islower()


def resolve_term(field: str, value: str, *, where: str | None = None) -> Term:
    """Resolve a name, synonym or ontology id to the term of the instance's offline ontology.

    Matching is exact but ignores case: first ontology ids (``UBERON:0002048``), then term names,
    then synonyms. A synonym that several terms share raises :class:`AmbiguousTermError`, except for
    organisms, where a species wins over a broader taxon ("mouse" is *Mus musculus*, not the genus).

    Parameters
    ----------
    field
        One of :data:`FIELDS`.
    value
        What the user wrote: ``"lung"``, ``"pulmo"``, ``"UBERON:0002048"``.
    where
        Where the value came from, quoted in errors (e.g. ``"sdata.attrs['bio']['tissue']"``).

    Returns
    -------
    Term
        ``(field, ontology_id, name)``.

    Raises
    ------
    TermNotFoundError
        The value is unknown; the message lists close matches.
    AmbiguousTermError
        The value is a synonym of several terms.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        resolve_term("tissue", "pulmo")
        # Term(field='tissue', ontology_id='UBERON:0002048', name='lung')
        resolve_term("tissue", "brest")
        # TermNotFoundError: tissue 'brest' is not a name, synonym or id of UBERON v2026-04-01;
        # close matches: 'breast', ...
    """
    index, ontology = _source_index(field)
    text = str(value).strip()
    curie = _CURIE.match(text)
    if curie:
        prefix = index.prefixes.get(curie.group(1).lower(), curie.group(1))
        oid = f"{prefix}:{curie.group(2)}"
        if oid in index.names:
            return index.term(oid)
    lower = text.lower()
    if lower in index.by_name:
        return index.term(index.by_name[lower])
    ids = index.by_synonym.get(lower, [])
    if len(ids) > 1 and field == "organism":
        species = [oid for oid in ids if _is_species(index.names[oid])]
        ids = species if len(species) == 1 else ids
    if len(ids) == 1:
        return index.term(ids[0])
    if len(ids) > 1:
        raise AmbiguousTermError(field, text, [index.term(oid) for oid in ids], where)
    raise TermNotFoundError(field, text, ontology, index.suggestions(text), where)
