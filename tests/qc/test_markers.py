"""Thumbnail markers: sensible defaults from channels.parquet, overrides checked against the panel."""

from __future__ import annotations

import pandas as pd
import pytest

import spora_sd
from spora_sd.qc.markers import default_markers, pick_markers


def test_defaults_of_the_synthetic_panel(small_cohort) -> None:
    panel = spora_sd.open_cohort(small_cohort).channels("imc")
    assert default_markers(panel) == ("PTPRC", "KRT5", "DNA1")  # immune, epithelium, nuclei


def test_defaults_skip_failed_channels_and_fill_unknown_panels() -> None:
    panel = pd.DataFrame(
        {
            "channel_name": ["PTPRC", "FOO", "BAR", "HOECHST"],
            "qc_pass": [False, True, True, True],
            "is_nuclear_marker": [False, False, False, False],
        }
    )
    # PTPRC failed QC; no preferred green marker: the next unused non-nuclear channels fill red and green
    assert default_markers(panel) == ("FOO", "BAR", "HOECHST")
    assert default_markers(panel.iloc[:2]) == ("FOO",)  # fewer usable channels than colours


def test_override_is_checked(small_cohort) -> None:
    panel = spora_sd.open_cohort(small_cohort).channels("imc")
    assert pick_markers(panel, ["CD3E", "VIM"]) == ("CD3E", "VIM")
    with pytest.raises(spora_sd.InvalidArgumentError, match=r"\['NOPE'\] are not in the imc panel; choose from"):
        pick_markers(panel, ["CD3E", "NOPE"], modality="imc")
    with pytest.raises(spora_sd.InvalidArgumentError, match="one to three"):
        pick_markers(panel, ["CD3E", "VIM", "DNA1", "KRT5"])


def test_defaults_of_a_real_steinbock_panel() -> None:
    # the panel of tests/data/imc_testdata_steinbock: no HUGO names, no is_nuclear_marker flags
    panel = pd.DataFrame({"channel_name": ["Ag107", "Cytokeratin 5", "Laminin", "YBX1", "H3K27Ac"]})
    assert default_markers(panel) == ("Laminin", "Cytokeratin 5", "H3K27Ac")
    imc = pd.DataFrame({"channel_name": ["Ir191", "CD45", "Pan-CK", "Xe131"]})
    assert default_markers(imc) == ("CD45", "Pan-CK", "Ir191")
