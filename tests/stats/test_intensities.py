"""Per-cell statistics with np.bincount, checked exactly against brute-force means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spora_sd.errors import CohortFormatError, CohortNotFoundError
from spora_sd.io.cohort import open_cohort
from spora_sd.stats import intensities
from spora_sd.stats.intensities import compute_cell_intensities, label_centroids, label_means


@pytest.fixture(scope="module")
def measured(small_cohort: Path):
    return compute_cell_intensities(small_cohort, modality="imc")


def test_exact_agreement_with_a_brute_force_mean(small_cohort: Path, measured) -> None:
    cohort = open_cohort(small_cohort)
    panel = cohort.panel("imc")
    assert list(measured.columns) == ["tissue_id", "cell_id", *panel]
    for tid in cohort.tissue_ids("imc"):
        mask = cohort.instance_mask(tid)
        image = cohort.image(tid, "imc").compute()
        rows = measured[measured["tissue_id"] == tid]
        assert list(rows["cell_id"]) == sorted(set(np.unique(mask)) - {0})
        channels = cohort.tissue_channels(tid, "imc")
        for cell, (_, row) in zip(rows["cell_id"], rows.iterrows(), strict=True):
            inside = mask == cell
            for name in panel:
                if name in channels:
                    brute = image[channels.index(name)][inside].astype(np.float64).mean()
                    assert row[name] == brute, (tid, cell, name)  # exact: integer sums in float64
                else:
                    assert np.isnan(row[name])


def test_agrees_with_the_cells_table(small_cohort: Path, measured) -> None:
    cohort = open_cohort(small_cohort)
    cells = cohort.cells().sort_values(["tissue_id", "cell_id"]).reset_index(drop=True)
    ordered = measured.sort_values(["tissue_id", "cell_id"]).reset_index(drop=True)
    for name in cohort.panel("imc"):
        np.testing.assert_allclose(ordered[name].to_numpy(np.float32), cells[name].to_numpy(), rtol=1e-6)


def test_strips_give_the_same_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 30, size=(67, 45)).astype(np.uint32)
    image = rng.integers(0, 60000, size=(3, 67, 45)).astype(np.uint16)
    whole = label_means(image, mask)
    monkeypatch.setattr(intensities, "_STRIP_PIXELS", 50)  # many strips of one or two rows
    np.testing.assert_array_equal(label_means(image, mask), whole)
    counts, cy, cx = label_centroids(mask)
    for label in (1, 17, 29):
        ys, xs = np.nonzero(mask == label)
        assert counts[label] == ys.size
        assert cy[label] == pytest.approx(ys.mean(), rel=1e-12) and cx[label] == pytest.approx(xs.mean(), rel=1e-12)
        for c in range(3):
            assert whole[c, label] == image[c][mask == label].astype(np.float64).mean()


def test_labels_without_pixels_are_nan() -> None:
    mask = np.array([[0, 3], [3, 0]], dtype=np.uint16)
    counts, cy, _ = label_centroids(mask)
    assert counts.tolist() == [2, 0, 0, 2] and np.isnan(cy[1]) and cy[3] == 0.5
    assert np.isnan(label_means(np.ones((1, 2, 2)), mask)[0, 1])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="does not match"):
        label_means(np.zeros((1, 3, 3)), np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(CohortFormatError, match="negative"):
        label_centroids(np.array([[-1, 0]]))
    with pytest.raises(CohortFormatError, match="integers"):
        label_centroids(np.zeros((2, 2), dtype=np.float32))


def test_tissue_subset_and_errors(small_cohort: Path) -> None:
    cohort = open_cohort(small_cohort)
    tid = cohort.tissue_ids("imc")[-1]
    one = compute_cell_intensities(cohort, tissues=[tid], resolution=1.0)
    assert set(one["tissue_id"]) == {tid}
    with pytest.raises(CohortNotFoundError, match="no multiplex modality 'codex'"):
        compute_cell_intensities(cohort, modality="codex")
