"""The ontology files shipped by cellxgene-ontology-guide, parsed offline into bionty source tables."""

from __future__ import annotations

import pytest

from spora_sd.ontologies.files import ONTOLOGY_NAMES, ontology_frame, ontology_version


@pytest.mark.parametrize("name", [n for n in ONTOLOGY_NAMES if n != "NCBITaxon"])
def test_frames_have_bionty_columns(name: str) -> None:
    df = ontology_frame(name)
    assert list(df.columns) == ["ontology_id", "name", "synonyms", "description", "parents"]
    assert len(df) > 1000
    assert df["ontology_id"].str.startswith(f"{name}:").all()
    assert df["ontology_id"].is_unique
    # no synonym list may contain the separator itself
    assert not df["synonyms"].dropna().str.contains(r"\|\|").any()


def test_parents_are_direct_parents() -> None:
    df = ontology_frame("MONDO").set_index("ontology_id")
    tnbc = df.loc["MONDO:0005494"]
    assert tnbc["name"] == "triple-negative breast carcinoma"
    assert "triple-negative breast cancer" in tnbc["synonyms"].split("|")
    # walk up from TNBC: "breast carcinoma" is an ancestor, reached through direct parents only
    seen, frontier = set(), set(tnbc["parents"])
    while frontier:
        seen |= frontier
        frontier = {p for oid in frontier if oid in df.index for p in df.loc[oid, "parents"]} - seen
    assert "MONDO:0004989" in seen  # breast carcinoma
    assert "MONDO:0004992" in seen  # cancer


def test_ncbitaxon_keeps_taxa_with_common_names() -> None:
    df = ontology_frame("NCBITaxon").set_index("ontology_id")
    assert df.loc["NCBITaxon:9606", "name"] == "Homo sapiens"
    assert df.loc["NCBITaxon:9606", "scientific_name"] == "Homo sapiens"
    assert "human" in df.loc["NCBITaxon:9606", "synonyms"].split("|")
    assert "mouse" in df.loc["NCBITaxon:10090", "synonyms"].split("|")
    assert df["synonyms"].notna().all()
    assert 10_000 < len(df) < 100_000


def test_versions_and_unknown_names() -> None:
    assert ontology_version("UBERON").startswith("v")
    with pytest.raises(ValueError, match="not shipped"):
        ontology_version("NOPE")
    with pytest.raises(ValueError, match="unknown ontology"):
        ontology_frame("UniProt")
