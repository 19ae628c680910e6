"""Marker -> UniProt mapping: the cited table is checked against the shipped UniProt release."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from spora_sd.ontologies.files import uniprot_entries
from spora_sd.ontologies.proteins import marker_table, uniprot_id, uniprot_ids


def test_every_table_entry_exists_in_the_shipped_release() -> None:
    entries = uniprot_entries("HUMAN")
    table = marker_table()
    mapped = table.dropna(subset=["entry_name"])
    assert len(mapped) > 50
    for row in mapped.itertuples():
        assert entries.get(row.entry_name) == row.accession, f"{row.marker}: {row.entry_name} is not {row.accession}"
    # rows without an entry are deliberate non-proteins: they carry no accession either
    assert table.loc[table["entry_name"].isna(), "accession"].isna().all()
    assert not table["marker"].duplicated().any()


@pytest.mark.parametrize(
    ("marker", "accession"),
    [
        ("CD3E", "P07766"),  # entry name = HUGO symbol (CD3E_HUMAN)
        ("KRT5", "P13647"),  # entry name differs (K2C5_HUMAN)
        ("Ki67", "P46013"),
        ("ki-67", "P46013"),  # case and separators ignored
        ("E-cadherin", "P12830"),
        ("CD45", "P08575"),
        ("CD11b", "P11215"),  # not CD11B_HUMAN, which is CDK11B
        ("PTPRC", "P08575"),
        ("FOXP3", "Q9BZS1"),
    ],
)
def test_known_markers(marker: str, accession: str) -> None:
    assert uniprot_id(marker) == accession


@pytest.mark.parametrize("marker", ["DNA1", "Ir191", "panCK", "HLA-DR", "CD3", "not_a_marker", "", "  "])
def test_no_match_is_none(marker: str) -> None:
    assert uniprot_id(marker) is None


def test_mouse_uses_the_same_protein_mnemonics() -> None:
    mouse = uniprot_entries("MOUSE")
    assert uniprot_id("CD3E", organism="mouse") == "P22646"
    assert uniprot_id("KRT5", organism="Mus musculus") == mouse["K2C5_MOUSE"]
    # the table's override holds for mouse too: CD11B_MOUSE is Cdk11b, not integrin alpha-M
    assert uniprot_id("CD11b", organism="mouse") == mouse["ITAM_MOUSE"] != mouse.get("CD11B_MOUSE")
    assert uniprot_id("DNA1", organism="mouse") is None


def test_unknown_organism_is_an_error() -> None:
    with pytest.raises(ValueError, match="organism 'zebrafish'"):
        uniprot_id("CD3E", organism="zebrafish")


def test_uniprot_ids_reports_unmapped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="spora_sd.ontologies.proteins"):
        result = uniprot_ids(["CD3E", "DNA1", "MS4A1"])
    assert result == {"CD3E": "P07766", "DNA1": None, "MS4A1": "P11836"}
    assert "DNA1" in caplog.text


def test_marker_table_is_read_only_data() -> None:
    table = marker_table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["marker", "entry_name", "accession", "note"]
