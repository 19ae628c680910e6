"""Released ontologies, read offline from the files that ``cellxgene-ontology-guide`` ships.

``cellxgene-ontology-guide`` (a PyPI package of the CZ CELLxGENE project) ships released UBERON,
MONDO, CL, EFO, NCBITaxon and UniProt (Swiss-Prot) term tables as zstd-compressed JSON inside the
wheel. Reading them needs no network, which is why every ontology term spora-sd uses comes from
here and not from a download at run time.

This module only parses the files into plain :class:`pandas.DataFrame` objects; it does not import
lamindb. :mod:`spora_sd.lamin.ontologies` loads the frames into bionty, and :mod:`spora_sd.ontologies.proteins`
maps marker names to UniProt accessions with :func:`uniprot_entries`.

Examples
--------
>>> from spora_sd.ontologies.files import ontology_frame
>>> df = ontology_frame("UBERON")
>>> df.set_index("ontology_id").loc["UBERON:0002048", "name"]
'lung'
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any

import pandas as pd

from spora_sd.errors import InvalidArgumentError

__all__ = ["ONTOLOGY_NAMES", "ontology_frame", "ontology_version", "uniprot_entries"]

logger = logging.getLogger(__name__)

#: Ontologies that :func:`ontology_frame` can read.
ONTOLOGY_NAMES = ("UBERON", "MONDO", "CL", "EFO", "NCBITaxon")

# NCBITaxon holds 1.26 million taxa (an 844 MB JSON document, 3 GB in memory once parsed). Only the
# taxa that carry a common name (a synonym such as "human" or "house mouse", about 37,000) are kept:
# enough to name the organism of any cohort, small enough to load into bionty in a second.
# Their "ancestors" maps are dropped from the raw text before parsing, which makes reading the file
# take 5 s and 1.8 GB instead of 17 s and 3 GB.
_STRIP_ANCESTORS = re.compile(rb'"ancestors":\{[^}]*\},?')


def _require_guide() -> Any:
    try:
        from cellxgene_ontology_guide import supported_versions
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "offline ontologies need the package 'cellxgene-ontology-guide' "
            "(pip install 'spora-sd[lamin]' or pip install cellxgene-ontology-guide)"
        ) from e
    return supported_versions


@functools.cache
def _schema() -> Any:
    return _require_guide().CXGSchema()


def ontology_version(name: str) -> str:
    """Version of the released ontology ``name`` that the installed ``cellxgene-ontology-guide`` ships.

    Parameters
    ----------
    name
        ``"UBERON"``, ``"MONDO"``, ``"CL"``, ``"EFO"``, ``"NCBITaxon"`` or ``"UniProt"``.

    Returns
    -------
    str
        The release tag, e.g. ``"v2026-04-01"``.

    Examples
    --------
    >>> ontology_version("UBERON").startswith("v")
    True
    """
    try:
        return str(_schema().supported_ontologies[name]["version"])
    except KeyError:
        raise InvalidArgumentError(
            f"ontology {name!r} is not shipped by cellxgene-ontology-guide; "
            f"known: {sorted(_schema().supported_ontologies)}"
        ) from None


def _file_name(name: str) -> str:
    from cellxgene_ontology_guide._constants import ONTOLOGY_FILENAME_SUFFIX

    return f"{name}-ontology-{ontology_version(name)}{ONTOLOGY_FILENAME_SUFFIX}"


def _read_raw(name: str) -> bytes:
    import os

    import zstandard
    from cellxgene_ontology_guide._constants import DATA_ROOT

    path = os.path.join(DATA_ROOT, _file_name(name))
    with open(path, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def _read_terms(name: str) -> dict[str, dict[str, Any]]:
    raw = _read_raw(name)
    if name == "NCBITaxon":
        raw = _STRIP_ANCESTORS.sub(b"", raw)
    return json.loads(raw)


@functools.cache
def ontology_frame(name: str) -> pd.DataFrame:
    """The terms of one shipped ontology as a bionty source table.

    Deprecated terms and terms of other ontologies that the release imports (e.g. CL terms inside
    UBERON) are left out. The result is cached for the life of the process; treat it as read-only.

    Parameters
    ----------
    name
        One of :data:`ONTOLOGY_NAMES`.

    Returns
    -------
    pandas.DataFrame
        Columns ``ontology_id``, ``name``, ``synonyms`` (``"|"``-joined, or None), ``description``
        and ``parents`` (list of the direct parents' ontology ids). For NCBITaxon, ``name`` is the
        scientific name, ``scientific_name`` repeats it, ``synonyms`` holds the common names and
        ``parents`` is empty; only taxa that have a common name are kept.

    Examples
    --------
    >>> df = ontology_frame("MONDO").set_index("ontology_id")
    >>> df.loc["MONDO:0005494", "name"]
    'triple-negative breast carcinoma'
    """
    if name not in ONTOLOGY_NAMES:
        raise InvalidArgumentError(f"unknown ontology {name!r}; expected one of {list(ONTOLOGY_NAMES)}")
    terms = _read_terms(name)
    prefix = f"{name}:"
    rows = []
    for ontology_id, term in terms.items():
        if not ontology_id.startswith(prefix) or term.get("deprecated", False):
            continue
        synonyms = term.get("synonyms") or []
        if name == "NCBITaxon" and not synonyms:
            continue
        ancestors = term.get("ancestors") or {}
        rows.append(
            {
                "ontology_id": ontology_id,
                "name": term["label"],
                # "|" separates synonyms in bionty; a synonym that contains one would split wrongly
                "synonyms": "|".join(s for s in synonyms if "|" not in s) or None,
                "description": term.get("description"),
                # the files store every ancestor with its distance; distance 1 = direct parent
                "parents": [a for a, dist in ancestors.items() if dist == 1 and a.startswith(prefix)],
            }
        )
    df = pd.DataFrame(rows, columns=["ontology_id", "name", "synonyms", "description", "parents"])
    if name == "NCBITaxon":
        df["scientific_name"] = df["name"]
    logger.debug("parsed %s %s: %d terms", name, ontology_version(name), len(df))
    return df


@functools.cache
def uniprot_entries(organism_suffix: str = "HUMAN") -> dict[str, str]:
    """UniProtKB/Swiss-Prot entry names of one organism, mapped to their accessions.

    Parameters
    ----------
    organism_suffix
        The organism mnemonic that ends every Swiss-Prot entry name, e.g. ``"HUMAN"``, ``"MOUSE"``.

    Returns
    -------
    dict of str to str
        Entry name (``"CD3E_HUMAN"``) -> accession (``"P07766"``), from the UniProt release shipped
        by ``cellxgene-ontology-guide``. The file has no gene names, only entry names.

    Examples
    --------
    >>> uniprot_entries("HUMAN")["CD3E_HUMAN"]
    'P07766'
    """
    suffix = f"_{organism_suffix.upper()}"
    terms = json.loads(_read_raw("UniProt"))
    return {
        term["label"]: key.split(":", 1)[1]
        for key, term in terms.items()
        if term["label"].endswith(suffix) and not term.get("deprecated", False)
    }
