"""An imported cohort carries its registry entry's curated ontology labels into LaminDB (issue 14).

An ai4bmr-datasets folder named ``Jackson2020`` is imported under the registry key
``jackson2020single``; registering the result needs no tissue, disease or assay argument, because
registration looks the key up in the registry (:func:`spora_sd.datasets.registry.cohort_info`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spora_sd.importers import from_ai4bmr
from spora_sd.importers.synthetic_ai4bmr import make_ai4bmr_folder
from spora_sd.lamin import register, search


@pytest.fixture(scope="module")
def imported_jackson(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ai4bmr-lamin")
    src = make_ai4bmr_folder(root / "src", name="Jackson2020", n_samples=2)
    return from_ai4bmr(src, root / "datasets", standardization=False, tiling=False)


def test_imported_cohort_is_registered_with_the_curated_terms(lamin, imported_jackson: Path) -> None:
    assert imported_jackson.name == "jackson2020single"
    artifact = register(imported_jackson)
    assert [t.ontology_id for t in artifact.tissues.all()] == ["UBERON:0000310"]  # breast
    assert [d.ontology_id for d in artifact.diseases.all()] == ["MONDO:0007254"]  # breast cancer
    assert [a.ontology_id for a in artifact.experimental_factors.all()] == ["OBI:0003096"]  # IMC
    assert [o.ontology_id for o in artifact.organisms.all()] == ["NCBITaxon:9606"]
    # the importer's cell_type column became cell-type labels
    assert artifact.cell_types.count() + artifact.ulabels.count() > 0
    hits = search(tissue="breast", disease="breast cancer")
    assert "spora/jackson2020single" in set(hits["key"])
