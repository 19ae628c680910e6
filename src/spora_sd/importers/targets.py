"""Panel target names -> spora channel names, through the cited table ``target_channels.csv``.

ai4bmr-datasets names every channel by a snake_case ``target`` (``cytokeratin_5``, ``ki_67``); the spora
layout names channels by HUGO gene symbols (``KRT5``, ``MKI67``). The table beside this module maps the
targets of the four ai4bmr panels (Jackson 2020, Danenberg 2022, Cords 2024, Keren 2018; each row says
where it comes from). A target that the table does not know keeps its name and is reported, never
dropped. The UniProt accession of a channel comes from :func:`spora_sd.ontologies.proteins.uniprot_id`
(the existing cited marker table), looked up by the row's ``hugo_symbol``.

Examples
--------
>>> [m.channel_name for m in map_targets(["cytokeratin_5", "Ki-67", "my_new_marker"])]
['KRT5', 'MKI67', 'my_new_marker']
>>> map_targets(["cd45"], dataset="Danenberg2022")[0].channel_name  # ai4bmr's cd45 is CD45RO there
'CD45RO'
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "NUCLEAR_CHANNELS",
    "TargetMapping",
    "channels_table_for",
    "map_targets",
    "name_table_channels",
    "normalise_target",
    "target_table",
]

logger = logging.getLogger(__name__)

_TABLE = Path(__file__).with_name("target_channels.csv")
#: Channel names of the table that stain nuclei (DNA intercalators, histones): ``is_nuclear_marker``.
NUCLEAR_CHANNELS = frozenset({"DNA1", "DNA2", "dsDNA", "HistoneH3", "H3K27me3", "H3K9ac", "H3K27ac", "pHH3"})
_ANY = "*"


@dataclass(frozen=True)
class TargetMapping:
    """One panel target and the channel it becomes."""

    target: str
    channel_name: str
    #: Gene whose UniProt accession the channel gets ("" when it is not one protein or unknown).
    hugo_symbol: str
    #: Whether the table knew the target (False: the name was kept as it is).
    known: bool
    #: Swiss-Prot entry name when the marker table has no row for ``hugo_symbol`` ("" otherwise).
    uniprot_entry: str = ""


def normalise_target(name: str) -> str:
    """The key a target is matched by: lower case, letters and digits only.

    >>> normalise_target("Ki-67"), normalise_target("ki_67"), normalise_target(" CD45 RO ")
    ('ki67', 'ki67', 'cd45ro')
    """
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


@functools.cache
def target_table() -> pd.DataFrame:
    """The cited mapping table (columns ``dataset, target, channel_name, hugo_symbol, source``).

    >>> target_table().set_index("target").loc["ki_67", "channel_name"]
    'MKI67'
    """
    return pd.read_csv(_TABLE, comment="#", dtype=str, keep_default_na=False)


@functools.cache
def _lookup(dataset: str) -> dict[str, tuple[str, str, str]]:
    table = target_table()
    out: dict[str, tuple[str, str, str]] = {}
    # rows for every dataset first, then the dataset's own rows, which win
    for scope in (_ANY, dataset):
        for row in table.loc[table["dataset"] == scope].itertuples(index=False):
            out[normalise_target(row.target)] = (row.channel_name, row.hugo_symbol, row.uniprot_entry)
    return out


def map_targets(targets: Sequence[str], dataset: str | None = None, *, report: bool = True) -> list[TargetMapping]:
    """Map panel targets to channel names; unknown targets keep their name (logged as a warning).

    Two targets that would get the same channel name (two antibodies against one protein that the
    table does not tell apart) keep unique names: the second keeps its own target name.

    Parameters
    ----------
    targets
        The panel's targets, in image order.
    dataset
        The ai4bmr dataset name (``"Jackson2020"``), for the rows that hold only in that dataset.
    report
        Log the targets that the table does not know (a warning).
    """
    lookup = _lookup(dataset or _ANY)
    out: list[TargetMapping] = []
    used: set[str] = set()
    for target in targets:
        hit = lookup.get(normalise_target(target))
        name, hugo, entry = hit if hit else (str(target), "", "")
        if name in used:
            logger.warning("targets %r and another both map to %r: keeping the name %r", target, name, target)
            name = str(target)
        used.add(name)
        out.append(TargetMapping(str(target), name, hugo, hit is not None, entry))
    unknown = [m.target for m in out if not m.known]
    if unknown and report:
        logger.warning(
            "%d panel targets are not in the mapping table and keep their names (no UniProt id): %s",
            len(unknown),
            ", ".join(unknown),
        )
    return out


def channels_table_for(mappings: Sequence[TargetMapping]) -> pd.DataFrame:
    """``channels.parquet`` for mapped targets: UniProt ids by HUGO symbol from the existing marker table.

    Where the table names a Swiss-Prot entry, its accession comes from the same offline UniProt release.

    >>> channels_table_for(map_targets(["cd3", "dna1"]))[["channel_name", "uniprot_id"]].values.tolist()
    [['CD3E', 'P07766'], ['DNA1', '']]
    """
    from spora_sd.convert.plan import channels_table

    table = channels_table([m.channel_name for m in mappings])
    try:
        from spora_sd.ontologies.proteins import uniprot_entries, uniprot_id
    except ImportError:  # the lamin extra is optional: the defaults of channels_table stand
        return table

    def accession(m: TargetMapping) -> str:
        if m.uniprot_entry:
            return uniprot_entries(m.uniprot_entry.rsplit("_", 1)[1]).get(m.uniprot_entry) or ""
        return (uniprot_id(m.hugo_symbol) or "") if m.hugo_symbol else ""

    table["uniprot_id"] = [accession(m) for m in mappings]
    table["is_nuclear_marker"] = [m.channel_name in NUCLEAR_CHANNELS for m in mappings]
    return table


def name_table_channels(sdata: Any, dataset: str | None = None) -> dict[str, str]:
    """Rename the ``var_names`` of every table to mapped channel names (HUGO symbols); returns the renames.

    The UniProt accession of each renamed channel goes to ``var["uniprot_id"]``, which
    :func:`spora_sd.from_spatialdata` writes to ``channels.parquet``.
    """
    renamed: dict[str, str] = {}
    for table in sdata.tables.values():
        mappings = map_targets([str(v) for v in table.var_names], dataset=dataset)
        table.var_names = [m.channel_name for m in mappings]
        table.var["uniprot_id"] = channels_table_for(mappings)["uniprot_id"].to_numpy()
        renamed.update({m.target: m.channel_name for m in mappings if m.target != m.channel_name})
    if renamed:
        logger.info("channel names mapped to HUGO symbols: %s", renamed)
    return renamed
