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
    labels, whole = label_means(image, mask)
    assert labels.tolist() == list(range(1, 30))
    monkeypatch.setattr(intensities, "_STRIP_PIXELS", 50)  # many strips of one or two rows
    np.testing.assert_array_equal(label_means(image, mask)[1], whole)
    labels, counts, cy, cx = label_centroids(mask)
    for label in (1, 17, 29):
        k = label - 1
        ys, xs = np.nonzero(mask == label)
        assert labels[k] == label and counts[k] == ys.size
        assert cy[k] == pytest.approx(ys.mean(), rel=1e-12) and cx[k] == pytest.approx(xs.mean(), rel=1e-12)
        for c in range(3):
            assert whole[c, k] == image[c][mask == label].astype(np.float64).mean()


def test_only_labels_with_pixels_are_listed() -> None:
    mask = np.array([[0, 3], [3, 0]], dtype=np.uint16)
    labels, counts, cy, _ = label_centroids(mask)
    assert labels.tolist() == [3] and counts.tolist() == [2] and cy.tolist() == [0.5]
    assert label_means(np.ones((1, 2, 2)), mask)[1].tolist() == [[1.0]]


def test_huge_sparse_labels_cost_what_the_cells_cost() -> None:
    """A cell labelled 4,000,000,000: arrays as long as the cells, never as the largest label."""
    mask = np.zeros((40, 50), dtype=np.uint32)
    mask[2:6, 3:9] = 4_000_000_000
    mask[20:30, 10:12] = 7
    image = np.arange(2 * 40 * 50, dtype=np.float32).reshape(2, 40, 50)
    index = intensities.LabelIndex(mask)
    assert index.labels.tolist() == [7, 4_000_000_000]
    assert index._lookup is None  # 4e9 > pixels / 8: no table sized by the label
    labels, counts, cy, cx = label_centroids(mask, index)
    assert labels.tolist() == [7, 4_000_000_000] and counts.tolist() == [20, 24]
    assert (cy.tolist(), cx.tolist()) == ([24.5, 3.5], [10.5, 5.5])
    _, means = label_means(image, mask)
    assert means.shape == (2, 2)
    assert means[1, 1] == image[1][mask == 4_000_000_000].astype(np.float64).mean()


def test_lookup_table_and_binary_search_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 40, size=(50, 30)).astype(np.uint32) * 100
    table = intensities.LabelIndex(mask)
    monkeypatch.setattr(intensities, "_LOOKUP_MIN", 1)
    search = intensities.LabelIndex(mask)
    assert table._lookup is not None and search._lookup is None
    np.testing.assert_array_equal(table.labels, search.labels)
    for a, b in zip(label_centroids(mask, table), label_centroids(mask, search), strict=True):
        np.testing.assert_array_equal(a, b)


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


def test_image_means_checks_the_stored_image_against_the_tables(tmp_path: Path) -> None:
    """Level 0 is read without dask, but the OME metadata is still checked (channels, mpp, shape)."""
    from spora_sd.io.images import write_image

    names = ["CD3E", "MS4A1", "DNA1"]
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 1000, (3, 300, 260)).astype("uint16")
    mask = rng.integers(0, 40, (300, 260)).astype("uint32")
    path = write_image(tmp_path / "d2020x_a1b2c3d4_0000.ome.zarr", pixels, mpp=1.0, channel_names=names, n_levels=2)
    labels, means = intensities.image_means(path, mask, "m.npz", 3, channel_names=names, mpp=1.0)
    expected = label_means(pixels, mask)
    np.testing.assert_array_equal(labels, expected[0])
    np.testing.assert_allclose(means, expected[1])
    swapped = [names[1], names[0], names[2]]
    with pytest.raises(CohortFormatError, match="omero channel labels"):
        intensities.image_means(path, mask, "m.npz", 3, channel_names=swapped, mpp=1.0)
    with pytest.warns(UserWarning, match="on_mismatch='warn'"):
        intensities.image_means(path, mask, "m.npz", 3, channel_names=swapped, mpp=1.0, on_mismatch="warn")
    with pytest.raises(CohortFormatError):  # the folder's resolution differs from the stored scale
        intensities.image_means(path, mask, "m.npz", 3, channel_names=names, mpp=0.5)
    with pytest.raises(CohortFormatError, match="channels_per_tissue lists 2"):
        intensities.image_means(path, mask, "m.npz", 2, channel_names=names[:2], mpp=1.0)
    with pytest.raises(CohortFormatError, match="mask shape"):
        intensities.image_means(path, mask[:10], "m.npz", 3, channel_names=names, mpp=1.0)
