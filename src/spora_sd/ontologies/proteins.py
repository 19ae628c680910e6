"""Marker (channel) names to UniProt accessions, offline.

Two sources, in this order:

1. A small cited table of common spatial proteomics markers (``data/marker_uniprot.csv``): HUGO
   symbols whose Swiss-Prot entry name differs (``KRT5`` -> ``K2C5_HUMAN``), usual antibody names
   (``Ki67``, ``CD45``, ``E-cadherin``) and channels that are deliberately *not* one protein
   (``DNA1``, ``panCK``, ``HLA-DR``).
2. An exact match of ``<MARKER>_<ORGANISM>`` against the Swiss-Prot entry names of the UniProt release
   that ``cellxgene-ontology-guide`` ships (``CD3E`` -> ``CD3E_HUMAN`` -> ``P07766``). That file has no
   gene names, so this is how far an offline look-up can go; the table overrides known false friends
   (``CD11B_HUMAN`` is CDK11B, not the integrin CD11b).

A marker that neither source knows maps to ``None``: no accession is ever guessed.

This module does not import lamindb; the exporter uses it to fill ``channels.parquet``'s
``uniprot_id`` column.

Examples
--------
>>> from spora_sd.ontologies.proteins import uniprot_id, uniprot_ids
>>> uniprot_id("CD3E")
'P07766'
>>> uniprot_id("KRT5")
'P13647'
>>> uniprot_id("DNA1") is None
True
>>> uniprot_ids(["CD45", "not_a_marker"])
{'CD45': 'P08575', 'not_a_marker': None}
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from spora_sd.errors import InvalidArgumentError
from spora_sd.ontologies.files import uniprot_entries

__all__ = ["marker_table", "uniprot_id", "uniprot_ids"]

logger = logging.getLogger(__name__)

_TABLE = Path(__file__).with_name("marker_uniprot.csv")
# organism name (as users and bionty spell it) -> Swiss-Prot organism mnemonic
_ORGANISM_SUFFIX = {
    "human": "HUMAN",
    "homo sapiens": "HUMAN",
    "ncbitaxon:9606": "HUMAN",
    "mouse": "MOUSE",
    "mus musculus": "MOUSE",
    "ncbitaxon:10090": "MOUSE",
}


def _key(marker: str) -> str:
    # case and separators vary between panels ("E-cadherin", "Ecadherin", "ki67")
    return "".join(ch for ch in marker.strip().upper() if ch.isalnum())


@functools.cache
def marker_table() -> pd.DataFrame:
    """The cited marker table (human), one row per marker spelling.

    Returns
    -------
    pandas.DataFrame
        Columns ``marker``, ``entry_name``, ``accession`` and ``note``; ``entry_name`` and
        ``accession`` are empty (NaN) for channels that are not a single protein.

    Examples
    --------
    >>> marker_table().set_index("marker").loc["KRT5", "accession"]
    'P13647'
    """
    return pd.read_csv(_TABLE, comment="#", dtype=str)


@functools.cache
def _table_lookup() -> dict[str, str | None]:
    """Normalised marker -> Swiss-Prot entry name without the organism suffix (None: not one protein)."""
    table = marker_table()
    return {
        _key(m): (None if pd.isna(entry) else str(entry).rsplit("_", 1)[0])
        for m, entry in zip(table["marker"], table["entry_name"], strict=True)
    }


def _suffix(organism: str) -> str:
    try:
        return _ORGANISM_SUFFIX[organism.strip().lower()]
    except KeyError:
        raise InvalidArgumentError(
            f"organism {organism!r} is not supported for UniProt look-ups; use one of {sorted(_ORGANISM_SUFFIX)}"
        ) from None


def uniprot_id(marker: str, organism: str = "human") -> str | None:
    """UniProt accession of one marker, or None when it cannot be told offline.

    Parameters
    ----------
    marker
        Channel name, preferably the HUGO symbol (``"CD3E"``); common antibody names (``"Ki67"``,
        ``"CD45"``) are understood too. Case and ``-``/``_``/space separators are ignored.
    organism
        ``"human"`` (default) or ``"mouse"`` (also their scientific names or NCBITaxon ids). For mouse,
        a marker of the cited (human) table maps to the mouse entry of the same protein mnemonic
        (``KRT5`` -> ``K2C5_MOUSE``) when the release has one.

    Returns
    -------
    str or None
        The accession (``"P07766"``), or None: unknown marker, or a channel that is not one protein.

    Examples
    --------
    >>> uniprot_id("ki-67")
    'P46013'
    >>> uniprot_id("CD3E", organism="mouse")
    'P22646'
    >>> uniprot_id("CD11b")  # not CD11B_HUMAN, which is CDK11B
    'P11215'
    >>> uniprot_id("CD11b", organism="mouse") == uniprot_id("ITGAM", organism="mouse")
    True
    """
    suffix = _suffix(organism)
    key = _key(marker)
    if not key:
        return None
    table = _table_lookup()
    if key in table:
        # the table names the protein; its entry name in another organism keeps the same protein
        # mnemonic (K2C5_HUMAN, K2C5_MOUSE), which is how Swiss-Prot names orthologs
        protein = table[key]
        return None if protein is None else uniprot_entries(suffix).get(f"{protein}_{suffix}")
    return uniprot_entries(suffix).get(f"{key}_{suffix}")


def uniprot_ids(markers: Iterable[str], organism: str = "human") -> dict[str, str | None]:
    """UniProt accessions of several markers; unmapped markers are reported in the log.

    Parameters
    ----------
    markers
        Channel names.
    organism
        See :func:`uniprot_id`.

    Returns
    -------
    dict of str to str or None
        Marker -> accession, in the order given; None where there is no match.

    Examples
    --------
    >>> uniprot_ids(["CD3E", "DNA1"])
    {'CD3E': 'P07766', 'DNA1': None}
    """
    result = {m: uniprot_id(m, organism) for m in markers}
    missing = [m for m, acc in result.items() if acc is None]
    if missing:
        logger.info("no UniProt accession for %d marker(s): %s", len(missing), ", ".join(missing))
    return result
