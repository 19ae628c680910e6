"""Offline ontologies in bionty: setup, idempotency, and term resolution."""

from __future__ import annotations

import socket
import time

import pytest

from spora_sd.lamin import AmbiguousTermError, TermNotFoundError, resolve_term, setup_ontologies


def test_network_is_guarded(lamin) -> None:
    # pytest-socket replaces connect(); a test here never reaches a non-loopback address
    from pytest_socket import _true_connect

    assert socket.socket.connect is not _true_connect


def test_setup_is_idempotent_and_fast(lamin) -> None:
    import bionty as bt

    n_sources = bt.Source.filter().count()
    started = time.perf_counter()
    sources = setup_ontologies()
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"second setup_ontologies() took {elapsed:.1f} s"
    assert bt.Source.filter().count() == n_sources
    assert {f: s.name for f, s in sources.items()} == {
        "tissue": "uberon",
        "disease": "mondo",
        "organism": "ncbitaxon",
        "assay": "efo",
        "cell_type": "cl",
    }
    for source in sources.values():
        # exactly one currently used source per entity, ours
        assert list(bt.Source.filter(entity=source.entity, currently_used=True)) == [source]


def test_bionty_lookups_use_the_offline_sources(lamin) -> None:
    import bionty as bt

    assert bt.Tissue.from_source(name="lung").ontology_id == "UBERON:0002048"
    assert bt.Disease.from_source(name="triple-negative breast carcinoma").ontology_id == "MONDO:0005494"
    assert bt.Organism.from_source(ontology_id="NCBITaxon:9606").name == "Homo sapiens"
    assert bt.ExperimentalFactor.from_source(ontology_id="OBI:0003096").name == "imaging mass cytometry"


@pytest.mark.parametrize(
    ("field", "value", "ontology_id"),
    [
        ("tissue", "lung", "UBERON:0002048"),
        ("tissue", "Lung", "UBERON:0002048"),
        ("tissue", "pulmo", "UBERON:0002048"),  # synonym
        ("tissue", "uberon:0000310", "UBERON:0000310"),  # id, any case
        ("disease", "NSCLC", "MONDO:0005233"),
        ("disease", "triple-negative breast cancer", "MONDO:0005494"),
        ("organism", "human", "NCBITaxon:9606"),
        ("organism", "mouse", "NCBITaxon:10090"),  # species wins over the genus Mus
        ("organism", "Homo sapiens", "NCBITaxon:9606"),
        ("assay", "IMC", "OBI:0003096"),
        ("assay", "MIBI-TOF", "OBI:0003100"),
        ("assay", "immunohistochemistry", "EFO:0022943"),
        ("cell_type", "T cell", "CL:0000084"),
    ],
)
def test_resolve_names_synonyms_and_ids(lamin, field: str, value: str, ontology_id: str) -> None:
    assert resolve_term(field, value).ontology_id == ontology_id


def test_unknown_term_names_field_value_and_close_matches(lamin) -> None:
    with pytest.raises(TermNotFoundError) as info:
        resolve_term("tissue", "brest", where="sdata.attrs['bio']['tissue']")
    message = str(info.value)
    assert "tissue 'brest'" in message
    assert "sdata.attrs['bio']['tissue']" in message
    assert "UBERON" in message
    assert "'breast'" in message
    assert "breast" in info.value.suggestions


def test_ambiguous_synonym_lists_candidates(lamin) -> None:
    import bionty as bt

    df = bt.Disease.public().to_dataframe().reset_index()
    # find a synonym that two MONDO terms share: the error must list both
    exploded = df.assign(syn=df["synonyms"].str.split("|")).explode("syn").dropna(subset=["syn"])
    exploded["low"] = exploded["syn"].str.lower()
    names = set(df["name"].str.lower())
    shared = exploded[~exploded["low"].isin(names)].groupby("low")["ontology_id"].nunique()
    synonym = shared[shared > 1].index[0]
    with pytest.raises(AmbiguousTermError) as info:
        resolve_term("disease", synonym)
    assert len(info.value.candidates) > 1
    assert "give the name or id" in str(info.value)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_ontologies_load_on_demand_in_a_plain_instance(lamin, tmp_path_factory, cohort_factory, caplog) -> None:
    """An instance made with plain ``lamin init --modules bionty`` (bionty's online sources): register and
    search load the shipped ontologies instead of failing."""
    import contextlib
    import logging

    import lamindb_setup

    from spora_sd.lamin import register, search

    storage = tmp_path_factory.mktemp("plain") / "spora-plain"
    storage.mkdir()
    try:
        with contextlib.chdir(storage):
            lamindb_setup.init(storage=str(storage), modules="bionty", name="spora-plain")
        import bionty as bt  # after init: lamindb re-creates the Django classes of the new instance

        assert not bt.Source.filter(currently_used=True, dataframe_artifact_id__isnull=False).exists()
        with caplog.at_level(logging.INFO, logger="spora_sd.lamin.ontologies"):
            assert search(tissue="lung").empty
        assert "loading the shipped ontologies" in caplog.text
        artifact = register(cohort_factory("plain2024synthetic"), tissue="lung", disease="NSCLC", organism="human")
        assert [t.ontology_id for t in artifact.tissues.all()] == ["UBERON:0002048"]
    finally:
        lamin.connect()
