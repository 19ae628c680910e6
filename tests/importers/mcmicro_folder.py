"""An MCMICRO-shaped output folder, made to what spatialdata-io's reader expects.

``spatialdata_io.mcmicro`` (readers/mcmicro.py, spatialdata-io 0.7.1; ``McmicroKeys`` in
_constants/_constants.py) reads, for a whole-slide (non-TMA) run:

- ``qc/params.yml`` with ``workflow: {tma: false}``;
- ``markers.csv`` with ``channel_number`` (increasing), ``cycle_number``, ``marker_name``;
- ``registration/<sample>.ome.tif``: exactly one ``C x Y x X`` image, channels in ``markers.csv`` order;
- ``segmentation/<method>-<sample>/{cell,nuclei}.ome.tif``: labels named ``<sample>_cell`` etc.;
- ``quantification/<sample>--<method>_<mask>.csv``: ``CellID``, one column per marker name,
  ``X_centroid``, ``Y_centroid`` and more (region ``<sample>_<mask>``).

The image carries OME-XML with ``PhysicalSizeX``/``Y`` as ``ashlar`` writes them. Per-cell values are the
true mean pixel value of each cell, so an import can be compared with its source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

MARKERS = ["DNA1", "CD3", "Ki-67", "pan_ck", "mystery_marker"]


def _mask(size: int, side: int, shift: int = 0) -> np.ndarray:
    grid = (np.arange(size) + shift) // side
    per_row = -(-(size + shift) // side)
    labels = (grid[:, None] * per_row + grid[None, :] + 1).astype("int32")
    border = (np.arange(size) + shift) % side == 0
    labels[border[:, None] | border[None, :]] = 0
    # renumber to 1..n, as MCMICRO's segmentation does
    values = np.unique(labels)
    values = values[values != 0]
    lookup = np.zeros(labels.max() + 1, dtype="int32")
    lookup[values] = np.arange(1, values.size + 1)
    return lookup[labels]


def _table(pixels: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    flat = mask.ravel().astype("int64")
    ids = np.unique(flat)
    ids = ids[ids != 0]
    counts = np.bincount(flat)
    columns = {"CellID": ids}
    for name, plane in zip(MARKERS, pixels, strict=True):
        columns[name] = np.bincount(flat, weights=plane.ravel().astype("float64"))[ids] / counts[ids]
    yy, xx = np.indices(mask.shape)
    columns["X_centroid"] = np.bincount(flat, weights=xx.ravel())[ids] / counts[ids]
    columns["Y_centroid"] = np.bincount(flat, weights=yy.ravel())[ids] / counts[ids]
    columns["Area"] = counts[ids]
    return pd.DataFrame(columns)


def make_mcmicro_sample(
    root: Path, sample: str, *, size: int = 64, mpp: float | None = 0.65, seed: int = 0, tma: bool = False
) -> Path:
    """Write one MCMICRO output folder ``root/<sample>`` and return it."""
    rng = np.random.default_rng(seed)
    folder = root / sample
    for sub in ("qc", "registration", f"segmentation/unmicst-{sample}", "quantification"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "qc" / "params.yml").write_text(f"workflow:\n  tma: {'true' if tma else 'false'}\n", encoding="utf-8")
    pd.DataFrame({"channel_number": np.arange(1, len(MARKERS) + 1), "cycle_number": 1, "marker_name": MARKERS}).to_csv(
        folder / "markers.csv", index=False
    )
    pixels = rng.poisson(rng.gamma(2.0, 300.0, (len(MARKERS), size, size))).astype("uint16")
    metadata: dict = {"axes": "CYX", "Channel": {"Name": MARKERS}}
    if mpp is not None:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    tifffile.imwrite(folder / "registration" / f"{sample}.ome.tif", pixels, ome=True, metadata=metadata)
    for kind, side, shift in (("cell", 8, 0), ("nuclei", 6, 2)):
        mask = _mask(size, side, shift)
        tifffile.imwrite(
            folder / f"segmentation/unmicst-{sample}/{kind}.ome.tif", mask, ome=True, metadata={"axes": "YX"}
        )
        _table(pixels, mask).to_csv(folder / "quantification" / f"{sample}--unmicst_{kind}.csv", index=False)
    return folder
