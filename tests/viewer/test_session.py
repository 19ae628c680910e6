"""What a view session picks: the modality, the channels shown, their contrast, without reading pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spora_sd.errors import InvalidArgumentError
from spora_sd.viewer.config import tissue_config
from spora_sd.viewer.session import ViewSession


def test_multiplex_first_with_one_nuclear_marker_and_six_channels(small_cohort: Path, tmp_path: Path) -> None:
    session = ViewSession(small_cohort, tmp_path)
    assert session.modality == "imc"
    view = session.tissue_view(session.tissues[0])
    shown = [view.channels[i] for i in view.shown]
    assert len(shown) == 6 and shown[0] == "DNA1" and "H3C1" not in shown  # one nuclear marker is enough
    assert all(view.windows[c][1] > 0 for c in shown)


def test_he_is_drawn_as_rgb_over_the_dtype_range(small_cohort: Path, tmp_path: Path) -> None:
    session = ViewSession(small_cohort, tmp_path, modality="he")
    view = session.tissue_view(session.tissues[0])
    assert view.rgb and list(view.channels) == ["R", "G", "B"] and list(view.shown) == [0, 1, 2]
    assert view.windows == {"R": (0.0, 255.0), "G": (0.0, 255.0), "B": (0.0, 255.0)}
    config = tissue_config(view).to_dict()
    assert set(config["coordinationSpace"]["photometricInterpretation"].values()) == {"RGB"}


def test_contrast_without_standardization_comes_from_the_cells(tmp_path: Path) -> None:
    import spora_sd

    path = spora_sd.make_synthetic_cohort(
        tmp_path, name="nostats2025cohort", n_tissues=1, image_size=96, n_cells=20, standardization=False, tiling=False
    )
    session = ViewSession(path, tmp_path / "cache")
    tissue = session.tissues[0]
    view = session.tissue_view(tissue)
    cells = spora_sd.open_cohort(path).cells(tissues=[tissue])
    assert view.windows["CD3E"] == (0.0, pytest.approx(float(np.nanquantile(cells["CD3E"], 0.99))))


def test_unknown_modality_names_the_ones_with_images(small_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="has images of imc, he"):
        ViewSession(small_cohort, tmp_path, modality="codex")
