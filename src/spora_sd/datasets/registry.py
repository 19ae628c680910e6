"""Known cohorts of the spora collection, and where to find them on this machine.

The registry is data: ``cohorts.yaml`` in this package (one entry per cohort, as squidpy's
``datasets.yaml``), parsed once into the read-only mapping :data:`cohorts`. A cohort is looked for
at ``$SPORA_DATASETS_DIR/<dataset key>``; when it is not there, the error says where it looked and
gives the exact ``rclone`` command that copies it (or only some of its modality folders) from the
``spora`` bucket.

Examples
--------
>>> from spora_sd.datasets.registry import cohorts, cohort_info
>>> sorted(cohorts)[:2]
['cords2024cancer', 'danenberg2022breast']
>>> cohort_info("jackson2020").doi
'10.1038/s41586-019-1876-x'
>>> cohort_info("keren2018").tissue.ontology_id
'UBERON:0000310'
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from spora_sd import layout
from spora_sd.errors import CohortNotFoundError, LayoutNameError

__all__ = [
    "DATASETS_DIR_ENV",
    "RCLONE_REMOTE",
    "CohortInfo",
    "OntologyTerm",
    "cohort_info",
    "aliases",
    "cohorts",
    "rclone_command",
    "resolve_cohort",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder that holds the cohorts (the same as the spora-io reader's).
DATASETS_DIR_ENV = "SPORA_DATASETS_DIR"
#: rclone remote and bucket of the hosted collection: ``rclone copy spora:spora/<key> ...``.
RCLONE_REMOTE = "spora:spora"
_REGISTRY_FILE = "cohorts.yaml"


@dataclass(frozen=True)
class OntologyTerm:
    """A term name and its ontology id, e.g. ``OntologyTerm("breast", "UBERON:0000310")``."""

    name: str
    ontology_id: str


@dataclass(frozen=True)
class PublishedCounts:
    """Counts reported by the publication (``None`` where unknown)."""

    images: int | None = None
    markers: int | None = None
    cells: int | None = None


@dataclass(frozen=True)
class CohortInfo:
    """One entry of the registry.

    Attributes
    ----------
    key
        Dataset key: the cohort's folder name.
    aliases
        Short names that resolve to ``key``.
    title, citation, year, journal, doi
        The publication.
    modalities
        Modality folders of the hosted cohort.
    assay, tissue, disease, organism
        Ontology-backed labels (names and ids).
    published
        Published counts of images, markers and cells.
    """

    key: str
    aliases: tuple[str, ...]
    title: str
    citation: str
    year: int
    journal: str
    doi: str
    modalities: tuple[str, ...]
    assay: OntologyTerm
    tissue: OntologyTerm
    disease: OntologyTerm
    organism: OntologyTerm
    published: PublishedCounts

    @property
    def url(self) -> str:
        """The DOI as a link."""
        return f"https://doi.org/{self.doi}"

    def bio(self) -> dict[str, str]:
        """Biological labels as plain strings, the ``sdata.attrs["bio"]`` layout that LaminDB curates.

        Examples
        --------
        >>> cohort_info("cords2024").bio()["disease"]
        'non-small cell lung carcinoma'
        """
        out: dict[str, str] = {}
        for slot in ("tissue", "disease", "organism"):
            term: OntologyTerm = getattr(self, slot)
            out[slot] = term.name
            out[f"{slot}_ontology_id"] = term.ontology_id
        return out

    def tech(self) -> dict[str, str]:
        """Technical labels, the ``sdata.attrs["tech"]`` layout.

        Examples
        --------
        >>> cohort_info("keren2018").tech()
        {'assay': 'multiplexed ion beam imaging', 'assay_ontology_id': 'OBI:0003100'}
        """
        return {"assay": self.assay.name, "assay_ontology_id": self.assay.ontology_id}


def _term(entry: Mapping[str, Any], slot: str, key: str) -> OntologyTerm:
    value = entry.get(slot)
    if not isinstance(value, Mapping) or not {"name", "ontology_id"} <= set(value):
        raise ValueError(f"{_REGISTRY_FILE}: {key}.{slot} needs 'name' and 'ontology_id'")
    return OntologyTerm(str(value["name"]), str(value["ontology_id"]))


def _parse_entry(key: str, entry: Mapping[str, Any]) -> CohortInfo:
    layout.check_dataset_key(key)
    known = {f.name for f in fields(CohortInfo)} - {"key"}
    unknown = set(entry) - known
    if unknown:
        logger.warning("%s: %s: ignoring unknown fields %s", _REGISTRY_FILE, key, sorted(unknown))
    published = entry.get("published") or {}
    return CohortInfo(
        key=key,
        aliases=tuple(str(a) for a in entry.get("aliases", ())),
        title=str(entry["title"]),
        citation=str(entry["citation"]),
        year=int(entry["year"]),
        journal=str(entry["journal"]),
        doi=str(entry["doi"]),
        modalities=tuple(layout.check_modality(m) for m in entry.get("modalities", ())),
        assay=_term(entry, "assay", key),
        tissue=_term(entry, "tissue", key),
        disease=_term(entry, "disease", key),
        organism=_term(entry, "organism", key),
        published=PublishedCounts(**{k: (None if v is None else int(v)) for k, v in published.items()}),
    )


@functools.cache
def _load() -> tuple[Mapping[str, CohortInfo], Mapping[str, str]]:
    text = resources.files(__package__).joinpath(_REGISTRY_FILE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    entries = {key: _parse_entry(key, entry) for key, entry in raw.items()}
    aliases: dict[str, str] = {}
    for info in entries.values():
        for alias in info.aliases:
            if alias in entries or alias in aliases:
                raise ValueError(f"{_REGISTRY_FILE}: alias {alias!r} of {info.key!r} is already taken")
            aliases[alias] = info.key
    return MappingProxyType(entries), MappingProxyType(aliases)


#: Every known cohort, by dataset key (read-only).
cohorts: Mapping[str, CohortInfo] = _load()[0]
#: Alias -> dataset key (read-only).
aliases: Mapping[str, str] = _load()[1]


def _available() -> str:
    return ", ".join(f"{key} ({', '.join(info.aliases)})" if info.aliases else key for key, info in cohorts.items())


def _canonical_key(name: str) -> str | None:
    return name if name in cohorts else aliases.get(name)


def cohort_info(name: str) -> CohortInfo:
    """The registry entry of a dataset key or alias.

    Parameters
    ----------
    name
        A dataset key (``"jackson2020single"``) or an alias (``"jackson2020"``).

    Raises
    ------
    CohortNotFoundError
        When the name is not in the registry; the message lists the available names.

    Examples
    --------
    >>> cohort_info("schurch2020").assay.name
    'CODEX'
    """
    key = _canonical_key(name)
    if key is None:
        raise CohortNotFoundError(f"Unknown cohort {name!r}. Available: {_available()}")
    return cohorts[key]


def rclone_command(key: str, destination: str | Path, modalities: list[str] | None = None) -> str:
    """The ``rclone`` command that copies cohort ``key`` (or only some of its modality folders).

    A partial copy keeps ``metadata/`` and ``segmentations/`` (small, and needed by every reader)
    and the given modality folders; the copied cohort still opens.

    Examples
    --------
    >>> rclone_command("jackson2020single", "/data/jackson2020single")
    'rclone copy spora:spora/jackson2020single /data/jackson2020single'
    >>> rclone_command("jackson2020single", "/d/j", ["imc"])
    "rclone copy spora:spora/jackson2020single /d/j --include 'metadata/**' --include 'segmentations/**' --include 'imc/**'"
    """
    layout.check_dataset_key(key)
    command = f"rclone copy {RCLONE_REMOTE}/{key} {destination}"
    if modalities:
        folders = [layout.METADATA, layout.SEGMENTATIONS_DIR]
        for m in modalities:
            layout.check_modality(m)
            folders.append(f"{layout.IHC_DIR}/{m}" if m.startswith(layout.IHC_PREFIX) else m)
        command += "".join(f" --include '{f}/**'" for f in folders)
    return command


def _datasets_dir(datasets_dir: str | Path | None) -> Path | None:
    if datasets_dir is not None:
        return Path(datasets_dir).expanduser()
    value = os.environ.get(DATASETS_DIR_ENV)
    return Path(value).expanduser() if value else None


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith((".", "~")) or name.endswith(layout.IMAGE_SUFFIX)


def resolve_cohort(name_or_path: str | os.PathLike[str], *, datasets_dir: str | Path | None = None) -> Path:
    """The folder of a cohort given as a path, a dataset key or an alias.

    Parameters
    ----------
    name_or_path
        An existing folder (returned as is), a dataset key (``"jackson2020single"``) or an alias
        (``"jackson2020"``), looked for under ``$SPORA_DATASETS_DIR``. A key that is not in the
        registry is accepted too when its folder exists there (your own cohorts).
    datasets_dir
        Folder to look in instead of ``$SPORA_DATASETS_DIR``.

    Returns
    -------
    Path
        The cohort folder.

    Raises
    ------
    CohortNotFoundError
        When the folder does not exist: the message names where it looked and the ``rclone``
        command that copies the cohort; for an unknown name, it lists the available names.

    Examples
    --------
    >>> import os, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "jackson2020single").mkdir()
    >>> resolve_cohort("jackson2020", datasets_dir=root) == root / "jackson2020single"
    True
    """
    text = os.fspath(name_or_path)
    as_path = Path(text).expanduser()
    if as_path.is_dir():
        return as_path
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
        raise CohortNotFoundError(f"{as_path}: no such cohort folder")
    root = _datasets_dir(datasets_dir)
    key = _canonical_key(text)
    if key is None:
        try:
            layout.check_dataset_key(text)
        except LayoutNameError:
            raise CohortNotFoundError(
                f"{text!r} is neither an existing folder nor a cohort name. Known cohorts: {_available()}"
            ) from None
        if root is not None and (root / text).is_dir():
            return root / text
        where = f" (looked for {root / text})" if root is not None else ""
        raise CohortNotFoundError(f"Unknown cohort {text!r}{where}. Known cohorts: {_available()}")
    if root is None:
        raise CohortNotFoundError(
            f"Cannot locate cohort {key!r}: ${DATASETS_DIR_ENV} is not set. Set it to the folder that holds your "
            f"cohorts (export {DATASETS_DIR_ENV}=~/spora-datasets), then copy the cohort with:\n"
            f"  {rclone_command(key, f'${DATASETS_DIR_ENV}/{key}')}"
        )
    path = root / key
    if not path.is_dir():
        modalities = list(cohorts[key].modalities)
        raise CohortNotFoundError(
            f"Cohort {key!r} not found: looked for {path} (${DATASETS_DIR_ENV}={root}). Copy it with:\n"
            f"  {rclone_command(key, path)}\n"
            f"or copy only some modality folders (metadata and segmentations are always needed), e.g.:\n"
            f"  {rclone_command(key, path, modalities[:1] or ['imc'])}"
        )
    return path
