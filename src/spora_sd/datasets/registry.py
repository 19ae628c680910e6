"""Known cohorts of the spora collection, and where to find them on this machine.

The registry is data: ``cohorts.yaml`` in this package (one entry per cohort, as squidpy's
``datasets.yaml``), parsed once into the read-only mapping :data:`cohorts`. Each entry knows where the
hosted cohort lives (its bucket and prefix, :attr:`CohortInfo.location`). A cohort name is looked for
at ``$SPORA_DATASETS_DIR/<dataset key>`` (a folder or a URL); when there is no copy there, the hosted
cohort is read remotely when credentials are set up (the AWS variables, ``storage_options``, or an
rclone remote named ``spora``). When neither works, the error says what to set, and gives the exact
``rclone`` command that copies the cohort (or only some of its modality folders).

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
from spora_sd.errors import CohortNotFoundError, InvalidArgumentError, LayoutNameError
from spora_sd.io.location import is_remote, rclone_config_path, rclone_remote, resolve_location

__all__ = [
    "DATASETS_DIR_ENV",
    "RCLONE_REMOTE",
    "CohortInfo",
    "OntologyTerm",
    "cohort_info",
    "aliases",
    "cohorts",
    "rclone_command",
    "remote_location",
    "resolve_cohort",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder that holds the cohorts (the same as the spora-io reader's).
DATASETS_DIR_ENV = "SPORA_DATASETS_DIR"
#: rclone remote and bucket of the hosted collection: ``rclone copy spora:spora/<key> ...``.
RCLONE_REMOTE = "spora:spora"
#: Name of the rclone remote the layout spec tells users to configure.
RCLONE_REMOTE_NAME = "spora"
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
class RemoteLocation:
    """Where a hosted cohort lives: a bucket and a prefix (the cohort's folder in the bucket)."""

    bucket: str
    prefix: str

    @property
    def s3_url(self) -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{self.prefix}"

    def rclone(self, remote: str = RCLONE_REMOTE_NAME) -> str:
        """The rclone location ``<remote>:<bucket>/<prefix>``."""
        return f"{remote}:{self.bucket}/{self.prefix}"


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
    location
        Where the hosted cohort lives (bucket and prefix).
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
    location: RemoteLocation | None = None

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
    where = entry.get("location")
    location = None
    if where is not None:
        if not isinstance(where, Mapping) or not {"bucket", "prefix"} <= set(where):
            raise ValueError(f"{_REGISTRY_FILE}: {key}.location needs 'bucket' and 'prefix'")
        location = RemoteLocation(str(where["bucket"]), str(where["prefix"]).strip("/"))
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
        location=location,
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


def _datasets_dir(datasets_dir: str | Path | None) -> Path | str | None:
    """The datasets root: a local folder, or a URL / rclone location kept as a string."""
    value = datasets_dir if datasets_dir is not None else os.environ.get(DATASETS_DIR_ENV)
    if value is None or value == "":
        return None
    if isinstance(value, str) and is_remote(value):
        return value.rstrip("/")
    return Path(value).expanduser()


def _rclone_spora_remote() -> bool:
    """Whether the user's rclone configuration has the spec's ``spora`` remote (of type s3)."""
    try:
        rclone_remote(RCLONE_REMOTE_NAME)
    except InvalidArgumentError:
        return False
    return True


def _credentials_set_up(storage_options: Mapping[str, Any] | None) -> bool:
    return bool(storage_options) or bool(
        (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
        or os.environ.get("AWS_PROFILE")
    )


def remote_location(key: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Where the registry's cohort ``key`` (or alias) is read from remotely.

    The ``s3://`` URL when credentials are given (``storage_options`` or the AWS variables), else the
    rclone location when an rclone remote named ``spora`` is configured (the spec's set-up), else the
    ``s3://`` URL.

    Examples
    --------
    >>> remote_location("keren2018", {"anon": True})
    's3://spora/keren2018structured'
    """
    info = cohort_info(key)
    location = info.location or RemoteLocation(RCLONE_REMOTE.split(":", 1)[1], info.key)
    if not _credentials_set_up(storage_options) and _rclone_spora_remote():
        return location.rclone()
    return location.s3_url


def _how_to_get(key: str, where: str) -> str:
    info = cohorts[key]
    location = info.location or RemoteLocation(RCLONE_REMOTE.split(":", 1)[1], key)
    modalities = list(info.modalities)
    return (
        f"To read it remotely from {location.s3_url}, set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
        f"AWS_ENDPOINT_URL (or pass storage_options=, or configure an rclone remote named "
        f"{RCLONE_REMOTE_NAME!r} of type s3 in {rclone_config_path()}, or point RCLONE_CONFIG to one). "
        f"To copy it, run:\n  {rclone_command(key, where)}\n"
        f"or copy only some modality folders (metadata and segmentations are always needed), e.g.:\n"
        f"  {rclone_command(key, where, modalities[:1] or ['imc'])}"
    )


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith((".", "~")) or name.endswith(layout.IMAGE_SUFFIX)


def resolve_cohort(
    name_or_path: str | os.PathLike[str],
    *,
    datasets_dir: str | Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """The folder of a cohort given as a path, a dataset key or an alias.

    Parameters
    ----------
    name_or_path
        An existing folder (returned as is), a remote location (``s3://bucket/prefix/<dataset>``,
        ``https://.../<dataset>``, an rclone ``remote:bucket/prefix/<dataset>``), a dataset key
        (``"jackson2020single"``) or an alias (``"jackson2020"``), looked for under
        ``$SPORA_DATASETS_DIR`` (a folder or a URL). A key that is not in the registry is accepted
        too when its folder exists there (your own cohorts). A registry cohort without a copy there
        is read from its hosted location when credentials are set up (see :func:`remote_location`).
    datasets_dir
        Folder (or URL) to look in instead of ``$SPORA_DATASETS_DIR``.
    storage_options
        Options of the remote filesystem (credentials, ``client_kwargs.endpoint_url``, ...).

    Returns
    -------
    Path or upath.UPath
        The cohort folder, or its remote location.

    Raises
    ------
    CohortNotFoundError
        When there is no copy and no remote access: the message names where it looked, what to set
        to read the cohort remotely, and the ``rclone`` command that copies it; for an unknown name,
        it lists the available names.

    Examples
    --------
    >>> import os, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "jackson2020single").mkdir()
    >>> resolve_cohort("jackson2020", datasets_dir=root) == root / "jackson2020single"
    True
    """
    if not isinstance(name_or_path, str | os.PathLike) or (isinstance(name_or_path, str) and is_remote(name_or_path)):
        return resolve_location(name_or_path, dict(storage_options or {}))  # type: ignore[return-value]
    text = os.fspath(name_or_path)
    as_path = Path(text).expanduser()
    if as_path.is_dir():
        return as_path
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
        raise CohortNotFoundError(f"{as_path}: no such cohort folder")
    root = _datasets_dir(datasets_dir)
    if isinstance(root, str):
        return _resolve_under_url(root, text, storage_options)
    key = _canonical_key(text)
    if key is None:
        _checked_name(text)
        if root is not None and (root / text).is_dir():
            return root / text
        where = f" (looked for {root / text})" if root is not None else ""
        raise CohortNotFoundError(f"Unknown cohort {text!r}{where}. Known cohorts: {_available()}")
    if root is not None and (root / key).is_dir():
        return root / key  # a local copy wins
    if _credentials_set_up(storage_options) or _rclone_spora_remote():
        location = remote_location(key, storage_options)
        logger.info("cohort %r: no local copy, reading %s", key, location)
        return resolve_location(location, dict(storage_options or {}))  # type: ignore[return-value]
    if root is None:
        raise CohortNotFoundError(
            f"Cannot locate cohort {key!r}: ${DATASETS_DIR_ENV} is not set and no remote credentials are set up. "
            f"Set {DATASETS_DIR_ENV} to the folder that holds your cohorts (export {DATASETS_DIR_ENV}=~/spora-datasets). "
            + _how_to_get(key, f"${DATASETS_DIR_ENV}/{key}")
        )
    path = root / key
    raise CohortNotFoundError(
        f"Cohort {key!r} not found: looked for {path} (${DATASETS_DIR_ENV}={root}), and no remote credentials are "
        f"set up. " + _how_to_get(key, str(path))
    )


def _checked_name(text: str) -> str:
    """``text``, a cohort name the registry does not know, when it is a valid dataset key; else a clear error."""
    try:
        layout.check_dataset_key(text)
    except LayoutNameError:
        raise CohortNotFoundError(
            f"{text!r} is neither an existing folder nor a cohort name. Known cohorts: {_available()}"
        ) from None
    return text


def _resolve_under_url(root: str, text: str, storage_options: Mapping[str, Any] | None) -> Any:
    """``$SPORA_DATASETS_DIR`` is a URL: the cohort ``text`` (key or alias) under it."""
    key = _canonical_key(text) or _checked_name(text)
    return resolve_location(f"{root}/{key}", dict(storage_options or {}))
