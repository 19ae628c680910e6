"""A small folder in the ai4bmr-datasets processed layout, made from its documented structure.

For tests, docs examples and the import benchmark: no download needed. The structure follows
``BaseIMCDataset`` (see :mod:`spora_sd.importers.ai4bmr_layout` for the cited source files): float32
``C x H x W`` images written by ``tifffile.imwrite(..., compression="zstd")`` as ai4bmr's ``io.imsave``
does, uint16 masks with deflate as its ``save_mask`` does, a panel indexed by ``channel_index`` with
snake_case ``target``s, a clinical table indexed by ``sample_id`` and per-cell tables with the index
``(sample_id, object_id)``. Per-cell intensities are the true mean pixel value of each cell.

``ids_from=2`` makes Keren 2018's masks: borders and background are 0, ids start at 2 and have gaps.
``mismatch=True`` makes the first sample's tables disagree with its mask as published data do: one
annotated object that is not in the mask and one mask label without annotation.

Examples
--------
>>> import tempfile, pathlib
>>> src = make_ai4bmr_folder(pathlib.Path(tempfile.mkdtemp()), n_samples=2, size=24)
>>> sorted(p.name for p in (src / "02_processed" / "images" / "published").iterdir())
['panel.parquet', 'sample_0.tiff', 'sample_1.tiff']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_TARGETS", "make_ai4bmr_folder"]

#: Targets of the synthetic panels, as ai4bmr's tidy_name spells them (one unknown to the mapping table).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "Jackson2020": ["histone_h3", "cytokeratin_5", "ki_67", "cd3", "e_cadherin_p_cadherin", "mystery_marker", "dna1"],
    "Danenberg2022": ["histone_h3", "cd45", "c_erb_b_2_her2_3b5", "c_erb_b_2_her2_d8f12", "ck5", "dna1"],
    "Cords2024": ["fap", "sma", "cd3", "pan_ck", "mystery_marker", "dna1"],
    "Keren2018": ["ds_dna", "cd45", "pan_keratin", "ki67", "mystery_marker"],
}
#: (patient column, per-cell annotation columns) written per dataset, as the dataset classes write them.
_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Jackson2020": ("pid", ("cell_type", "class", "cluster")),
    "Danenberg2022": ("metabric_id", ("cell_phenotype", "label", "is_epithelial")),
    "Cords2024": ("patient_id", ("cell_category", "cell_type", "cell_subtype")),
    "Keren2018": ("patient_id", ("group_name", "immune_group_name", "label_name")),
}
_CELL_TYPES = ("tumor", "t_cell", "b_cell", "macrophage", "stroma")


def _mask(rng: np.random.Generator, size: int, side: int, ids_from: int) -> np.ndarray:
    """Square cells on a grid with 1-pixel borders; labels from ``ids_from`` on, with gaps when ids_from > 1."""
    grid = np.arange(size) // side
    per_row = -(-size // side)
    labels = (grid[:, None] * per_row + grid[None, :]).astype("int64")
    step = 2 if ids_from > 1 else 1  # gaps: every other id unused
    labels = labels * step + ids_from
    border = (np.arange(size) % side == 0)[:, None] | (np.arange(size) % side == 0)[None, :]
    labels[border] = 0
    return labels.astype("uint16")


def _pixels(rng: np.random.Generator, c: int, size: int) -> np.ndarray:
    """IMC-like float32 counts: smooth structure (16 px blobs) plus Poisson noise."""
    low = rng.gamma(2.0, 5.0, (c, -(-size // 16), -(-size // 16)))
    smooth = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :size, :size]
    return rng.poisson(smooth).astype("float32")


def make_ai4bmr_folder(
    root: str | Path,
    *,
    name: str = "Jackson2020",
    n_samples: int = 3,
    size: int = 64,
    cell_side: int = 8,
    targets: Sequence[str] | None = None,
    ids_from: int | None = None,
    mismatch: bool = False,
    version: str | None = None,
    cells: bool = True,
    seed: int = 0,
) -> Path:
    """Write a processed ai4bmr dataset folder ``root/<name>`` and return it.

    Parameters
    ----------
    root
        The ``$AI4BMR_DATASETS_DIR``-like parent folder.
    name
        The dataset's name (``Jackson2020``, ``Danenberg2022``, ``Cords2024``, ``Keren2018`` or any other).
    n_samples
        Number of samples; samples 0 and 1 share a patient (two specimens).
    size
        Height and width of each image.
    cell_side
        Side of the square cells of the masks, in pixels.
    targets
        Panel targets; default :data:`DEFAULT_TARGETS` of the dataset.
    ids_from
        First mask label (default 2 for Keren2018, else 1; 2 also leaves gaps).
    mismatch
        Make the first sample's tables disagree with its mask (see the module docstring).
    version
        Mask version folder (default ``published_cell`` for Danenberg2022, else ``published``).
    cells
        Write the per-cell tables (annotations and intensities).
    seed
        Random seed.
    """
    rng = np.random.default_rng(seed)
    import tifffile

    base = Path(root) / name
    processed = base / "02_processed"
    targets = list(targets or DEFAULT_TARGETS.get(name, DEFAULT_TARGETS["Jackson2020"]))
    ids_from = ids_from if ids_from is not None else (2 if name == "Keren2018" else 1)
    mask_version = version or ("published_cell" if name == "Danenberg2022" else "published")
    patient_col, annotation_cols = _COLUMNS.get(name, ("patient_id", ("cell_type",)))
    images = processed / "images" / "published"
    masks = processed / "masks" / mask_version
    metadata = processed / "metadata" / "published"
    intensity = processed / "features" / "intensity" / "published"
    spatial = processed / "features" / "spatial" / "published"
    for folder in (images, masks, metadata, intensity, spatial):
        folder.mkdir(parents=True, exist_ok=True)

    panel = pd.DataFrame(
        {
            "target": targets,
            "page": np.arange(len(targets)),
            "metal_mass": [f"M{140 + i}" for i in range(len(targets))],
            "target_original": [t.replace("_", " ").title() for t in targets],
        },
        index=pd.Index(np.arange(len(targets)), name="channel_index"),
    )
    panel.to_parquet(images / "panel.parquet")

    sample_ids = [f"sample_{i}" for i in range(n_samples)]
    clinical = pd.DataFrame(
        {
            patient_col: [f"P{max(i - 1, 0):03d}" for i in range(n_samples)],  # samples 0 and 1: one patient
            "grade": pd.array([1 + i % 3 for i in range(n_samples)], dtype="Int64"),
            "er_status": pd.array(["positive" if i % 2 else "negative" for i in range(n_samples)], dtype="string"),
            "modality": pd.array(["tma"] * n_samples, dtype="string"),  # a clinical column named like a spora one
        },
        index=pd.Index(sample_ids, name="sample_id"),
    )
    clinical.to_parquet(processed / "metadata" / "clinical.parquet")

    for i, sample in enumerate(sample_ids):
        pixels = _pixels(rng, len(targets), size)
        mask = _mask(rng, size, cell_side, ids_from)
        tifffile.imwrite(images / f"{sample}.tiff", pixels, compression="zstd")
        tifffile.imwrite(masks / f"{sample}.tiff", mask, compression="zlib")  # deflate
        if not cells:
            continue
        labels = np.unique(mask)
        labels = labels[labels != 0]
        flat = mask.ravel().astype("int64")
        counts = np.bincount(flat, minlength=int(labels.max()) + 1)
        means = np.stack(
            [np.bincount(flat, weights=p.ravel(), minlength=counts.size)[labels] / counts[labels] for p in pixels],
            axis=1,
        )
        objects = labels.astype("int64")
        annotation_objects = objects
        if mismatch and i == 0:
            annotation_objects = np.append(objects[1:], objects.max() + 100)  # one missing, one extra
        index = pd.MultiIndex.from_arrays(
            [[sample] * annotation_objects.size, annotation_objects], names=["sample_id", "object_id"]
        )
        annotations = pd.DataFrame(index=index)
        for column in annotation_cols:
            if column.startswith("is_"):
                annotations[column] = pd.array(rng.random(annotation_objects.size) > 0.5, dtype="boolean")
            else:
                annotations[column] = pd.array(rng.choice(_CELL_TYPES, annotation_objects.size), dtype="string")
        annotations.to_parquet(metadata / f"{sample}.parquet")
        cell_index = pd.MultiIndex.from_arrays([[sample] * objects.size, objects], names=["sample_id", "object_id"])
        pd.DataFrame(means, index=cell_index, columns=targets).to_parquet(intensity / f"{sample}.parquet")
        pd.DataFrame({"area": counts[labels]}, index=cell_index).to_parquet(spatial / f"{sample}.parquet")
    return base
