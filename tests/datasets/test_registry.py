"""The registry of known cohorts: entries, read-only access, name resolution and the missing-cohort error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import spora_sd
from spora_sd.datasets import registry
from spora_sd.datasets.registry import CohortInfo, cohort_info, cohorts, rclone_command, resolve_cohort
from spora_sd.errors import CohortNotFoundError

KEYS = {
    "jackson2020single": "jackson2020",
    "danenberg2022breast": "danenberg2022",
    "cords2024cancer": "cords2024",
    "keren2018structured": "keren2018",
    "schurch2020coordinated": "schurch2020",
}


def test_the_five_cohorts_of_the_spec() -> None:
    assert set(cohorts) == set(KEYS)
    assert spora_sd.cohorts is cohorts
    for key, alias in KEYS.items():
        info = cohorts[key]
        assert isinstance(info, CohortInfo) and info.key == key and alias in info.aliases
        assert cohort_info(alias) is info and cohort_info(key) is info
        assert info.doi.startswith("10.") and info.url == f"https://doi.org/{info.doi}"
        assert info.title and info.citation and str(info.year) in info.citation
        assert info.organism.ontology_id == "NCBITaxon:9606"
    assert cohorts["cords2024cancer"].published.cells == 5984454
    assert cohorts["cords2024cancer"].published.markers == 43
    assert cohorts["schurch2020coordinated"].published.images is None  # unknown: not invented
    assert cohorts["keren2018structured"].assay.ontology_id == "OBI:0003100"


def test_read_only() -> None:
    with pytest.raises(TypeError):
        cohorts["mine2025x"] = cohorts["jackson2020single"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cohorts["jackson2020single"].doi = "x"  # type: ignore[misc]


def test_ontology_terms_match_the_released_ontologies() -> None:
    from spora_sd.ontologies.files import ontology_frame

    names = {}
    for ontology in ("UBERON", "MONDO"):
        frame = ontology_frame(ontology)
        names.update(dict(zip(frame["ontology_id"], frame["name"], strict=True)))
    for info in cohorts.values():
        for term in (info.tissue, info.disease):
            assert names[term.ontology_id] == term.name, term


def test_bio_and_tech_are_plain_strings() -> None:
    info = cohort_info("danenberg2022")
    assert info.bio() == {
        "tissue": "breast",
        "tissue_ontology_id": "UBERON:0000310",
        "disease": "breast cancer",
        "disease_ontology_id": "MONDO:0007254",
        "organism": "human",
        "organism_ontology_id": "NCBITaxon:9606",
    }
    assert info.tech() == {"assay": "imaging mass cytometry", "assay_ontology_id": "OBI:0003096"}


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(CohortNotFoundError, match=r"'nosuch2025cohort'.*jackson2020single"):
        cohort_info("nosuch2025cohort")


def test_existing_path_resolves_to_itself(tmp_path: Path) -> None:
    assert resolve_cohort(tmp_path) == tmp_path
    assert resolve_cohort(str(tmp_path)) == tmp_path
    with pytest.raises(CohortNotFoundError, match="no such cohort folder"):
        resolve_cohort(tmp_path / "missing2025x")
    with pytest.raises(CohortNotFoundError, match="no such cohort folder"):
        resolve_cohort("./missing2025x")


def test_alias_resolves_under_the_datasets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cords2024cancer").mkdir()
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path))
    assert resolve_cohort("cords2024") == tmp_path / "cords2024cancer"
    assert resolve_cohort("cords2024cancer") == tmp_path / "cords2024cancer"
    # a cohort of your own, not in the registry, resolves by its key too
    (tmp_path / "mine2025cohort").mkdir()
    assert resolve_cohort("mine2025cohort") == tmp_path / "mine2025cohort"
    other = tmp_path / "other"
    (other / "keren2018structured").mkdir(parents=True)
    assert resolve_cohort("keren2018", datasets_dir=other) == other / "keren2018structured"


def test_missing_cohort_error_gives_the_rclone_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path))
    with pytest.raises(CohortNotFoundError) as info:
        resolve_cohort("jackson2020")
    message = str(info.value)
    target = tmp_path / "jackson2020single"
    assert f"looked for {target}" in message
    assert f"rclone copy spora:spora/jackson2020single {target}" in message
    assert "--include 'metadata/**' --include 'segmentations/**' --include 'imc/**'" in message


def test_unset_datasets_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPORA_DATASETS_DIR", raising=False)
    with pytest.raises(CohortNotFoundError, match=r"(?s)SPORA_DATASETS_DIR is not set.*rclone copy"):
        resolve_cohort("keren2018")


def test_unknown_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path))
    with pytest.raises(
        CohortNotFoundError, match=r"Unknown cohort 'nosuch2025cohort'.*jackson2020single \(jackson2020\)"
    ):
        resolve_cohort("nosuch2025cohort")
    with pytest.raises(CohortNotFoundError, match="neither an existing folder nor a cohort name"):
        resolve_cohort("Not A Name")


def test_rclone_command_for_some_modality_folders() -> None:
    assert rclone_command("keren2018structured", "/d/k") == "rclone copy spora:spora/keren2018structured /d/k"
    command = rclone_command("keren2018structured", "/d/k", ["mibi", "ihc_CD3E"])
    assert command.endswith("--include 'mibi/**' --include 'ihc/ihc_CD3E/**'")
    with pytest.raises(ValueError):
        rclone_command("keren2018structured", "/d/k", ["../x"])


def test_registry_file_is_parsed_once() -> None:
    assert registry._load() is registry._load()
