"""Which three markers a QC thumbnail shows as red, green and blue.

The defaults follow what people look at first in a multiplex image: immune cells (red), epithelium
or stroma (green) and nuclei (blue). Each colour takes the first channel matching its preference
list (HUGO symbols and common panel names, e.g. ``PTPRC``/``CD45``, ``KRT5``/``Cytokeratin 5``,
``DNA1``/``Ir191``/``H3K27Ac``) that passed QC; a colour with no match takes the next unused channel
that passed QC (isotope-only names such as ``Ag107`` last), so any panel of three or more channels
gets three distinct ones.

Examples
--------
>>> import pandas as pd
>>> panel = pd.DataFrame({"channel_name": ["DNA1", "PTPRC", "KRT5", "MKI67"],
...                       "qc_pass": [True, True, True, False], "is_nuclear_marker": [True, False, False, True]})
>>> default_markers(panel)
('PTPRC', 'KRT5', 'DNA1')
>>> pick_markers(panel, ["KRT5", "PTPRC", "DNA1"])
('KRT5', 'PTPRC', 'DNA1')
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from spora_sd.errors import InvalidArgumentError

__all__ = ["RGB", "default_markers", "pick_markers"]

RGB = ("red", "green", "blue")
# Per colour: patterns of channel names (HUGO symbols and the names panels commonly use), most telling first.
_PREFERENCES = (
    # red: immune cells
    (r"PTPRC", r"CD45", r"CD3E?", r"CD68", r"CD8A?", r"CD4", r"MS4A1", r"CD20"),
    # green: epithelium, then stroma
    (r"KRT5", r"KRT\d+", r"Pan-?CK", r".*keratin.*", r"EPCAM", r"CDH1|E-?cadherin", r"VIM|Vimentin", r"ACTA2|SMA"),
    # blue: nuclei (IMC's iridium DNA intercalator, histones, DAPI/Hoechst)
    (r"DNA\d*", r"Ir19[13]", r"H3C1", r"H3.*|Histone.*", r"DAPI|Hoechst.*"),
)
# isotope-only names (e.g. Ag107, Xe131): background or calibration channels, taken last
_ISOTOPE = re.compile(r"[A-Z][a-z]?\d{2,3}")


def _usable(panel: pd.DataFrame) -> list[str]:
    """Panel channel names that passed QC (all of them when the table has no ``qc_pass``)."""
    names = panel["channel_name"].astype(str)
    if "qc_pass" in panel.columns:
        names = names[panel["qc_pass"].fillna(True).astype(bool)]
    return names.tolist()


def _first_match(patterns: Sequence[str], names: Sequence[str], taken: Sequence[str | None]) -> str | None:
    for pattern in patterns:
        for name in names:
            if name not in taken and re.fullmatch(pattern, name, flags=re.IGNORECASE):
                return name
    return None


def default_markers(panel: pd.DataFrame) -> tuple[str, ...]:
    """Red, green and blue markers for a ``channels.parquet`` table (fewer if the panel is smaller)."""
    usable = _usable(panel) or panel["channel_name"].astype(str).tolist()
    nuclear: list[str] = []
    if "is_nuclear_marker" in panel.columns:
        flagged = panel[panel["is_nuclear_marker"].fillna(False).astype(bool)]["channel_name"].astype(str)
        nuclear = [n for n in flagged if n in usable]
    chosen: list[str | None] = [None, None, None]
    chosen[2] = _first_match(_PREFERENCES[2], usable, chosen) or (nuclear[0] if nuclear else None)
    for i in (0, 1):
        chosen[i] = _first_match(_PREFERENCES[i], [n for n in usable if n not in nuclear], chosen)
    # a colour without a preferred marker takes the next unused one: stains first, isotope-only names last
    rest = [n for n in usable if n not in chosen and n not in nuclear]
    rest = [n for n in rest if not _ISOTOPE.fullmatch(n)] + [n for n in rest if _ISOTOPE.fullmatch(n)]
    rest += [n for n in nuclear if n not in chosen]
    for i, name in enumerate(chosen):
        if name is None and rest:
            chosen[i] = rest.pop(0)
    return tuple(n for n in chosen if n is not None)


def pick_markers(panel: pd.DataFrame, markers: Sequence[str] | None, *, modality: str = "") -> tuple[str, ...]:
    """``markers`` (red, green, blue; one to three names) checked against the panel, or the defaults.

    Raises
    ------
    InvalidArgumentError
        A name is not in the panel, or more than three (or no) names are given.
    """
    if markers is None:
        return default_markers(panel)
    markers = tuple(str(m) for m in markers)
    if not 1 <= len(markers) <= 3:
        raise InvalidArgumentError(f"markers={list(markers)!r}: give one to three channel names (red, green, blue)")
    names = panel["channel_name"].astype(str).tolist()
    unknown = [m for m in markers if m not in names]
    if unknown:
        where = f"the {modality} panel" if modality else "the panel"
        raise InvalidArgumentError(f"markers {unknown} are not in {where}; choose from {names}")
    return markers
