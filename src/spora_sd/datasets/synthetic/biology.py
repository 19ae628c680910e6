"""The biology of the synthetic tissues: cell types, the marker panel (real UniProt accessions) with
per-type expression, where in a cell each marker's signal sits, H&E colours and clinical subtypes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_NAME = "synthetic2025cohort"
CELL_TYPES_TASK = "cell_types"


@dataclass(frozen=True)
class CellType:
    """A cell type of the synthetic tissues: its name (the ``cell_types`` label) and coarse category."""

    name: str
    category: str


#: Cell types, in label-encoder order (values 1, 2, ...).
CELL_TYPES: tuple[CellType, ...] = (
    CellType("B cell", "immune"),
    CellType("T cell", "immune"),
    CellType("macrophage", "immune"),
    CellType("endothelial cell", "stromal"),
    CellType("stromal cell", "stromal"),
    CellType("tumor cell", "tumor"),
)
_TYPE_INDEX = {t.name: i for i, t in enumerate(CELL_TYPES)}
_ALL = tuple(t.name for t in CELL_TYPES)

# Where in the cell a marker's signal sits: relative intensity in (background, nucleus, cytoplasm, rim).
_PROFILES = {
    "nuclear": (0.0, 1.0, 0.12, 0.05),
    "cytoplasm": (0.0, 0.35, 1.0, 0.8),
    "membrane": (0.0, 0.25, 0.55, 1.0),
}
_ZONE_NUCLEUS, _ZONE_CYTOPLASM, _ZONE_RIM = 1, 2, 3
_RIM = 0.72  # normalised radius beyond which a pixel is the membrane rim


@dataclass(frozen=True)
class Marker:
    """One channel of the synthetic panel.

    Attributes
    ----------
    name
        HUGO symbol (``DNA1``/``DNA2`` are the iridium DNA intercalator channels of IMC: no protein).
    uniprot_id
        UniProt accession, ``""`` for a channel that is not a protein.
    entry_name
        Swiss-Prot entry name of the accession (the tests check both against the shipped UniProt release).
    localisation
        ``"nuclear"``, ``"cytoplasm"`` or ``"membrane"``.
    expression
        Cell type -> (mean ion counts of an expressing cell, fraction of that type's cells expressing).
    background
        Mean counts of a pixel outside cells.
    """

    name: str
    uniprot_id: str
    entry_name: str
    localisation: str
    expression: tuple[tuple[str, float, float], ...]
    background: float = 0.3

    @property
    def is_nuclear_marker(self) -> bool:
        return self.localisation == "nuclear"


def _m(name: str, acc: str, entry: str, loc: str, *expr: tuple[str, float, float], bg: float = 0.3) -> Marker:
    return Marker(name, acc, entry, loc, tuple(expr), bg)


def _everyone(mean: float) -> tuple[tuple[str, float, float], ...]:
    return tuple((t, mean, 1.0) for t in _ALL)


# The panel in priority order: a panel of n channels takes the first n. Accessions are checked against
# the UniProt release that cellxgene-ontology-guide ships (see tests/datasets/test_synthetic.py).
MARKERS: tuple[Marker, ...] = (
    _m("DNA1", "", "", "nuclear", *_everyone(45.0), bg=0.5),
    _m("H3C1", "P68431", "H31_HUMAN", "nuclear", *_everyone(28.0)),
    _m("PTPRC", "P08575", "PTPRC_HUMAN", "membrane", ("T cell", 22, 1), ("B cell", 22, 1), ("macrophage", 14, 1)),
    _m("CD3E", "P07766", "CD3E_HUMAN", "membrane", ("T cell", 26, 0.95)),
    _m("MS4A1", "P11836", "CD20_HUMAN", "membrane", ("B cell", 26, 0.95)),
    _m("CD68", "P34810", "CD68_HUMAN", "cytoplasm", ("macrophage", 24, 0.95)),
    _m("KRT5", "P13647", "K2C5_HUMAN", "cytoplasm", ("tumor cell", 16, 0.6)),
    _m(
        "VIM",
        "P08670",
        "VIME_HUMAN",
        "cytoplasm",
        ("stromal cell", 24, 0.95),
        ("endothelial cell", 16, 0.9),
        ("macrophage", 8, 0.6),
    ),
    _m("CDH1", "P12830", "CADH1_HUMAN", "membrane", ("tumor cell", 20, 0.9)),
    _m("CD8A", "P01732", "CD8A_HUMAN", "membrane", ("T cell", 14, 0.4)),
    _m("ACTA2", "P62736", "ACTA_HUMAN", "cytoplasm", ("stromal cell", 20, 0.7), ("endothelial cell", 6, 0.3)),
    _m("MKI67", "P46013", "KI67_HUMAN", "nuclear", ("tumor cell", 12, 0.3), ("T cell", 6, 0.05), ("B cell", 6, 0.1)),
    _m("CD4", "P01730", "CD4_HUMAN", "membrane", ("T cell", 12, 0.6), ("macrophage", 4, 0.5)),
    _m("PECAM1", "P16284", "PECA1_HUMAN", "membrane", ("endothelial cell", 24, 0.95)),
    _m("KRT8", "P05787", "K2C8_HUMAN", "cytoplasm", ("tumor cell", 24, 0.9)),
    _m("KRT18", "P05783", "K1C18_HUMAN", "cytoplasm", ("tumor cell", 20, 0.9)),
    _m("CD163", "Q86VB7", "C163A_HUMAN", "membrane", ("macrophage", 15, 0.6)),
    _m(
        "HLA-DRA",
        "P01903",
        "DRA_HUMAN",
        "membrane",
        ("macrophage", 20, 0.9),
        ("B cell", 15, 0.9),
        ("tumor cell", 4, 0.3),
    ),
    _m("FOXP3", "Q9BZS1", "FOXP3_HUMAN", "nuclear", ("T cell", 9, 0.1)),
    _m("CD19", "P15391", "CD19_HUMAN", "membrane", ("B cell", 15, 0.9)),
    _m("ITGAX", "P20702", "ITAX_HUMAN", "membrane", ("macrophage", 10, 0.5)),
    _m("COL1A1", "P02452", "CO1A1_HUMAN", "cytoplasm", ("stromal cell", 15, 0.8)),
    _m("EPCAM", "P16422", "EPCAM_HUMAN", "membrane", ("tumor cell", 20, 0.9)),
    _m("ESR1", "P03372", "ESR1_HUMAN", "nuclear", ("tumor cell", 14, 0.7)),
    _m("GZMB", "P10144", "GRAB_HUMAN", "cytoplasm", ("T cell", 8, 0.2)),
    _m("CD274", "Q9NZQ7", "PD1L1_HUMAN", "membrane", ("tumor cell", 5, 0.3), ("macrophage", 6, 0.4)),
    _m("KRT19", "P08727", "K1C19_HUMAN", "cytoplasm", ("tumor cell", 18, 0.85)),
    _m("CD34", "P28906", "CD34_HUMAN", "membrane", ("endothelial cell", 15, 0.9)),
    _m("FN1", "P02751", "FINC_HUMAN", "cytoplasm", ("stromal cell", 12, 0.8)),
    _m("ERBB2", "P04626", "ERBB2_HUMAN", "membrane", ("tumor cell", 10, 0.3)),
    _m("TP53", "P04637", "P53_HUMAN", "nuclear", ("tumor cell", 8, 0.4)),
    _m("PGR", "P06401", "PRGR_HUMAN", "nuclear", ("tumor cell", 8, 0.5)),
    _m("CD14", "P08571", "CD14_HUMAN", "membrane", ("macrophage", 10, 0.7)),
    _m(
        "CD44", "P16070", "CD44_HUMAN", "membrane", ("stromal cell", 8, 0.6), ("tumor cell", 5, 0.5), ("T cell", 5, 0.5)
    ),
    _m("KRT7", "P08729", "K2C7_HUMAN", "cytoplasm", ("tumor cell", 14, 0.7)),
    _m("KRT14", "P02533", "K1C14_HUMAN", "cytoplasm", ("tumor cell", 9, 0.3)),
    _m("GATA3", "P23771", "GATA3_HUMAN", "nuclear", ("tumor cell", 10, 0.7), ("T cell", 3, 0.3)),
    _m("CD38", "P28907", "CD38_HUMAN", "membrane", ("B cell", 9, 0.5), ("T cell", 3, 0.2)),
    _m("B2M", "P61769", "B2MG_HUMAN", "membrane", *_everyone(8.0)),
    _m("PDPN", "Q86YL7", "PDPN_HUMAN", "membrane", ("stromal cell", 9, 0.4)),
    _m("ITGAM", "P11215", "ITAM_HUMAN", "membrane", ("macrophage", 10, 0.6)),
    _m("CASP3", "P42574", "CASP3_HUMAN", "cytoplasm", *((t, 4.0, 0.05) for t in _ALL)),
    _m("PDCD1", "Q15116", "PDCD1_HUMAN", "membrane", ("T cell", 7, 0.15)),
    _m("DNA2", "", "", "nuclear", *_everyone(42.0), bg=0.5),
)
_MARKER_INDEX = {m.name: i for i, m in enumerate(MARKERS)}

# H&E colours (RGB): outside tissue, extracellular matrix, cytoplasm, tumour cytoplasm, nuclei of
# lymphocytes (dense, dark), of tumour cells (large, purple) and of other cells.
_HE_PALETTE = np.array(
    [
        (244, 242, 246),
        (242, 188, 214),
        (224, 142, 188),
        (200, 118, 176),
        (62, 42, 120),
        (104, 70, 156),
        (92, 62, 140),
    ],
    dtype=np.float32,
)

_SUBTYPES = ("luminal A", "luminal B", "HER2-enriched", "triple-negative")
