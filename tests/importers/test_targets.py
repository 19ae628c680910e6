"""The cited target -> channel-name table and its use."""

from __future__ import annotations

import pandas as pd

from spora_sd.importers.targets import channels_table_for, map_targets, normalise_target, target_table
from spora_sd.ontologies.proteins import uniprot_id


def test_table_is_consistent_and_cited() -> None:
    table = target_table()
    assert list(table.columns) == ["dataset", "target", "channel_name", "hugo_symbol", "uniprot_entry", "source"]
    assert (table["source"].str.len() > 0).all()
    # spellings that normalise to one key must agree (otherwise the later row would win silently)
    table = table.assign(key=table["target"].map(normalise_target))
    per_key = table.groupby(["dataset", "key"])[["channel_name", "hugo_symbol"]].nunique()
    assert (per_key <= 1).all().all(), per_key[(per_key > 1).any(axis=1)]


def test_every_hugo_symbol_has_a_uniprot_accession_offline() -> None:
    # from the cited marker table, or from the Swiss-Prot entry the row names (checked to exist)
    table = target_table()
    rows = table[table["hugo_symbol"] != ""]
    accessions = channels_table_for(map_targets(rows["target"].tolist(), report=False))["uniprot_id"]
    no_accession = rows.loc[(accessions == "").to_numpy(), "hugo_symbol"].tolist()
    assert no_accession == []
    assert uniprot_id("KRT5") == "P13647"
    named = table[table["uniprot_entry"] != ""]
    assert named["hugo_symbol"].map(lambda s: uniprot_id(s) is None).all()  # only where the marker table has none


def test_mapping_and_dataset_rows() -> None:
    mapped = map_targets(["cytokeratin_5", "Cytokeratin 5 ", "ki_67", "cd45", "unknown_one"], dataset="Jackson2020")
    names = [m.channel_name for m in mapped]
    assert names[0] == "KRT5"
    assert names[1] == "Cytokeratin 5 "  # a second target for KRT5 keeps its own name: names stay unique
    assert names[2:] == ["MKI67", "PTPRC", "unknown_one"]
    assert [m.known for m in mapped] == [True, True, True, True, False]
    assert map_targets(["cd45"], dataset="Danenberg2022")[0].channel_name == "CD45RO"


def test_channels_table_uses_the_hugo_symbol_for_the_accession() -> None:
    table = channels_table_for(map_targets(["c_erb_b_2_her2_3b5", "c_erb_b_2_her2_d8f12", "dna1"]))
    assert table["channel_name"].tolist() == ["ERBB2", "ERBB2-D8F12", "DNA1"]
    assert table["uniprot_id"].tolist() == ["P04626", "P04626", ""]
    assert isinstance(table, pd.DataFrame) and table["qc_pass"].all()
