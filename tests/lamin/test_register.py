"""Registration, search and load against real lamindb instances (SQLite and PostgreSQL + S3).

``lung`` is registered in place (the default for a cohort folder), ``tnbc`` as a SpatialData copy
(the only mode for a SpatialData object): every search/load test covers both modes.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from spora_sd.lamin import MetadataError, TermNotFoundError, get_artifact, load, register, search
from spora_sd.testing import assert_sdata_equal

LUNG = "lung2024synthetic"
TNBC = "tnbc2024synthetic"
TNBC_BIO = {
    "tissue": "breast",
    "tissue_ontology_id": "UBERON:0000310",
    "disease": "triple-negative breast cancer",  # a MONDO synonym
    "organism": "human",
}

_REGISTERED: dict[str, dict[str, Any]] = {}


@pytest.fixture
def cohorts(lamin, synthetic_paths) -> dict[str, Any]:
    """Registered once per backend: lung/NSCLC in place from its folder with arguments; breast/TNBC as a
    SpatialData copy whose attrs carry the labels (a synonym, an id and a common name)."""
    import spora_sd

    if lamin.name not in _REGISTERED:
        lung = register(
            synthetic_paths["lung"], tissue="lung", disease="non-small cell lung carcinoma", organism="human"
        )
        tnbc_sdata = spora_sd.to_spatialdata(synthetic_paths["tnbc"], bio=TNBC_BIO, tech={"assay": "IMC"})
        _REGISTERED[lamin.name] = {"lung": (None, lung), "tnbc": (tnbc_sdata, register(tnbc_sdata))}
    return _REGISTERED[lamin.name]


def _keys(df) -> set[str]:
    return set(df["key"])


def _ours(df) -> set[str]:
    """The keys of this module's two cohorts among the hits (other test modules share the instance)."""
    return set(df["key"]) & {f"spora/{LUNG}", f"spora/{TNBC}.zarr"}


def test_register_links_ontology_records(cohorts) -> None:
    _, lung = cohorts["lung"]
    _, tnbc = cohorts["tnbc"]
    assert lung.key == f"spora/{LUNG}"
    assert lung.otype is None  # the cohort folder, not a SpatialData store
    assert tnbc.key == f"spora/{TNBC}.zarr"
    assert tnbc.otype == "SpatialData"
    assert [t.ontology_id for t in lung.tissues.all()] == ["UBERON:0002048"]
    assert [d.ontology_id for d in lung.diseases.all()] == ["MONDO:0005233"]
    assert [d.ontology_id for d in tnbc.diseases.all()] == ["MONDO:0005494"]
    assert [o.ontology_id for o in tnbc.organisms.all()] == ["NCBITaxon:9606"]
    assert [a.ontology_id for a in tnbc.experimental_factors.all()] == ["OBI:0003096"]  # "IMC", a synonym
    # no assay given: taken from the cohort's modality (imc)
    assert [a.ontology_id for a in lung.experimental_factors.all()] == ["OBI:0003096"]
    labels = set(load(tnbc).tables["cells"].obs["cell_type"].astype(str))
    assert {c.name for c in tnbc.cell_types.all()} == labels - {"tumor cell"}  # "tumor cell": no CL term
    values = tnbc.features.get_values()
    assert values["dataset"] == TNBC
    assert values["n_tissues"] == 3
    assert values["n_cells"] == load(tnbc).tables["cells"].n_obs > 0
    assert values["stored_as"] == "spatialdata"
    assert values["format_version"] == "1.0"
    assert tnbc.schema.name == "spora SpatialData"
    lung_values = lung.features.get_values()
    assert (lung_values["stored_as"], lung_values["format_version"]) == ("cohort", "1.0")
    assert lung_values["n_tissues"] == 2
    assert lung_values["n_cells"] == load(lung).tables["cells"].n_obs > 0
    assert lung.schema.name == "spora SpatialData"


def test_unmapped_cell_types_are_kept_as_ulabels(cohorts) -> None:
    import lamindb as ln

    _, tnbc = cohorts["tnbc"]
    # the synthetic cell categories have no CL term
    assert {"immune", "stromal", "tumor"} <= {u.name for u in tnbc.ulabels.all()}
    assert ln.ULabel.filter(name="tumor").count() == 1


def test_search_by_tissue_disease_and_parent_term(cohorts) -> None:
    _, lung = cohorts["lung"]
    _, tnbc = cohorts["tnbc"]
    assert _ours(search(tissue="lung")) == {lung.key}
    assert _ours(search(tissue="pulmo")) == {lung.key}  # synonym
    assert _ours(search(tissue="UBERON:0000310")) == {tnbc.key}  # id
    assert _ours(search(disease="non-small cell lung carcinoma")) == {lung.key}
    assert _ours(search(disease="TNBC" if False else "MONDO:0005494")) == {tnbc.key}
    # ontology descendants: TNBC is a breast carcinoma, NSCLC is a lung carcinoma
    assert _ours(search(disease="breast carcinoma")) == {tnbc.key}
    assert _ours(search(disease="lung carcinoma")) == {lung.key}
    assert _ours(search(disease="carcinoma")) == {lung.key, tnbc.key}
    assert _ours(search(disease="breast carcinoma", descendants=False)) == set()
    assert _ours(search(tissue="breast", disease="non-small cell lung carcinoma")) == set()
    assert _ours(search(assay="IMC")) == {lung.key, tnbc.key}
    assert _ours(search(assay="MIBI")) == set()
    assert _ours(search(organism="human")) == {lung.key, tnbc.key}
    assert _ours(search(cell_type="macrophage")) == {lung.key, tnbc.key}
    assert _ours(search(cell_type="leukocyte")) == {lung.key, tnbc.key}  # T cells are leukocytes
    assert _ours(search(cell_type="neuron")) == set()
    assert _ours(search(cell_type="tumor")) == {lung.key, tnbc.key}  # the ULabel


def test_search_table(cohorts) -> None:
    _, tnbc = cohorts["tnbc"]
    table = search(disease="breast carcinoma")
    assert list(table.columns) == [
        "key",
        "uid",
        "dataset",
        "tissue",
        "disease",
        "organism",
        "assay",
        "n_tissues",
        "n_cells",
        "stored_as",
    ]
    mine = table[table["key"] == tnbc.key]  # other test modules register breast cohorts in the instance too
    assert len(mine) == 1, table
    row = mine.iloc[0].to_dict()
    assert row["uid"] == tnbc.uid
    assert row["dataset"] == TNBC
    assert row["tissue"] == "breast"
    assert row["disease"] == "triple-negative breast carcinoma"
    assert row["assay"] == "imaging mass cytometry"
    assert row["n_tissues"] == 3
    assert row["n_cells"] > 0
    assert row["stored_as"] == "spatialdata"
    lung_row = search(tissue="lung").iloc[0].to_dict()
    assert (lung_row["stored_as"], lung_row["n_tissues"], lung_row["organism"]) == ("cohort", 2, "Homo sapiens")


def test_search_with_unknown_term_suggests(cohorts) -> None:
    with pytest.raises(TermNotFoundError, match="'breast'"):
        search(tissue="brest")


def test_plain_lamindb_filters_on_linked_records(cohorts) -> None:
    import lamindb as ln

    _, lung = cohorts["lung"]
    _, tnbc = cohorts["tnbc"]
    ours = ln.Artifact.filter(key__in=[lung.key, tnbc.key])  # other test modules share the instance
    assert list(ours.filter(tissues__name="lung")) == [lung]
    assert list(ours.filter(diseases__ontology_id="MONDO:0005494")) == [tnbc]
    assert list(ours.filter(tissue="breast")) == [tnbc]  # by feature
    assert set(ours.filter(n_tissues__gt=2)) == {tnbc}


def test_load_returns_the_registered_sdata(cohorts, synthetic_paths) -> None:
    import spora_sd

    sdata, artifact = cohorts["tnbc"]
    for ref in (artifact.key, artifact.uid, TNBC, artifact):
        assert_sdata_equal(sdata, load(ref))
    # registered in place: to_spatialdata of the folder, plus the registered labels in attrs
    _, lung = cohorts["lung"]
    expected = spora_sd.to_spatialdata(synthetic_paths["lung"])
    loaded = load(lung)
    expected.attrs.update({"bio": loaded.attrs["bio"], "tech": loaded.attrs["tech"]})
    assert_sdata_equal(expected, loaded)
    assert loaded.attrs["bio"]["tissue_ontology_id"] == "UBERON:0002048"
    assert loaded.attrs["tech"]["assay_ontology_id"] == "OBI:0003096"


def test_the_store_is_written_by_spora_sd(cohorts) -> None:
    """lamindb writes the copy with spora_sd.write_spatialdata: the cohort's images stay sharded."""
    import zarr

    _, tnbc = cohorts["tnbc"]
    store = tnbc.cache()  # the stored folder (local storage: the folder itself; S3: a downloaded copy)
    images = zarr.open_group(store / "images", mode="r")
    name = next(iter(images.group_keys()))
    level = zarr.open_array(store / "images" / name / "s0", mode="r")
    assert level.shards is not None
    assert level.chunks[1:] == (256, 256)


def test_reregistering_creates_nothing(cohorts, synthetic_paths) -> None:
    import lamindb as ln

    _, lung = cohorts["lung"]
    counts = (ln.Artifact.filter().count(), ln.Run.filter().count(), ln.ULabel.filter().count())
    again = register(synthetic_paths["lung"], tissue="pulmo", disease="MONDO:0005233", organism="Homo sapiens")
    assert again.uid == lung.uid
    assert (ln.Artifact.filter().count(), ln.Run.filter().count(), ln.ULabel.filter().count()) == counts


def test_changed_content_is_a_new_version(lamin, sdata_factory) -> None:
    import lamindb as ln

    dataset = "versioned2024synthetic"
    first = register(sdata_factory(dataset, seed=1))
    second = register(sdata_factory(dataset, seed=2))
    assert second.uid != first.uid
    assert second.uid[:16] == first.uid[:16]  # same artifact family
    assert second.key == first.key
    assert ln.Artifact.filter(key=first.key).count() == 2
    assert get_artifact(dataset).uid == second.uid
    assert _keys(search(tissue="lung")) >= {second.key}
    assert first.uid not in set(search(tissue="lung", all_versions=False)["uid"])
    assert first.uid in set(search(tissue="lung", all_versions=True)["uid"])


def test_lineage_transform_and_run(cohorts) -> None:
    _, artifact = cohorts["lung"]
    run = artifact.run
    assert run is not None
    assert run.transform.key == "spora_sd.lamin.register"
    assert run.transform.kind == "function"
    assert run.status == "completed"
    assert run.params["dataset"] == LUNG
    assert run.params["mode"] == "cohort"
    _, tnbc = cohorts["tnbc"]
    assert tnbc.run.transform == run.transform
    assert tnbc.run.params["mode"] == "spatialdata"


def test_bad_term_saves_nothing(lamin, sdata_factory) -> None:
    import bionty as bt
    import lamindb as ln

    def counts() -> tuple[int, ...]:
        return tuple(r.filter().count() for r in (ln.Artifact, ln.Run, ln.ULabel, bt.Disease, bt.CellType))

    before = counts()
    sdata = sdata_factory(
        "brest2024synthetic", tissue="brest", disease="colorectal cancer", cell_types=("neuron", "stroma", "tumor")
    )
    with pytest.raises(TermNotFoundError) as info:
        register(sdata)
    message = str(info.value)
    assert "tissue 'brest'" in message
    assert "sdata.attrs['bio']['tissue']" in message
    assert "'breast'" in message
    assert counts() == before


def test_missing_field_and_contradicting_ids(lamin, sdata_factory) -> None:
    sdata = sdata_factory("missing2024synthetic", disease=None)
    with pytest.raises(MetadataError, match=r"attrs\['bio'\]\['disease'\] is missing.*disease="):
        register(sdata)
    sdata = sdata_factory("clash2024synthetic", tissue={"name": "lung", "ontology_id": "UBERON:0000310"})
    with pytest.raises(MetadataError, match="name different terms"):
        register(sdata)


def test_arguments_fill_and_are_stored(lamin, sdata_factory) -> None:
    sdata = sdata_factory("args2024synthetic", tissue=None, disease=None)
    artifact = register(sdata, tissue="UBERON:0002048", disease="lung adenocarcinoma")
    assert sdata.attrs["bio"]["tissue"] is None  # the caller's object is not modified
    stored = load(artifact).attrs["bio"]
    assert stored["tissue"] == "lung"
    assert stored["tissue_ontology_id"] == "UBERON:0002048"
    assert stored["disease_ontology_id"] == "MONDO:0005061"
    assert artifact.key in _keys(search(disease="lung carcinoma"))


def test_unmapped_labels_are_reported(lamin, sdata_factory, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="spora_sd.lamin.registration"):
        register(sdata_factory("report2024synthetic", cell_types=("T cell", "weird blob", "tumor")))
    assert "kept as ULabels" in caplog.text
    assert "'weird blob'" in caplog.text


def test_export_writes_a_valid_cohort(cohorts, tmp_path) -> None:
    import spora_sd
    from spora_sd.lamin import ArtifactNotFoundError, export

    sdata, artifact = cohorts["tnbc"]
    out = export(artifact.uid, tmp_path / TNBC, standardization=False, tiling=False)
    assert out == tmp_path / TNBC
    assert spora_sd.validate(out).ok
    again = spora_sd.to_spatialdata(out)
    assert set(again.tables["cells"].obs["tissue_id"]) == set(sdata.tables["cells"].obs["tissue_id"])
    with pytest.raises(ArtifactNotFoundError, match="registered:"):
        export("nothere2024cohort", tmp_path / "x")
