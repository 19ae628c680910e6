"""Crop: a random 256 x 256 all-channel crop read through the SpatialData image element, against a raw
``zarr`` read of the same crop from the same OME-Zarr array.

The cohort is the one of ``bench_open`` (made there when missing). Crops are placed at random (not on
the 256 px chunk grid, so most touch four chunks) in random tissues; both sides read the same list
of crops, alternating, best of ``repeat`` passes each:

- **spora**: ``sdata.images[name]["scale0"]["image"][:, y:y + 256, x:x + 256].values`` (xarray over dask
  over zarr, default dask scheduler);
- **baseline**: ``zarr.open_array(<image>/0)[:, y:y + 256, x:x + 256]`` on arrays opened beforehand.
"""

from __future__ import annotations

import numpy as np
import zarr
from bench_open import cohort
from common import Result, timed

from spora_sd.convert import element_names

CROPS = {True: 20, False: 200}
SIZE = 256


def run(quick: bool) -> list[Result]:
    from spora_sd import open_cohort, to_spatialdata

    path = cohort(quick)
    opened = open_cohort(path)
    sdata = to_spatialdata(path, elements=("images",))
    rng = np.random.default_rng(0)
    tissue_ids = opened.tissue_ids("imc")
    crops = []
    for _ in range(CROPS[quick]):
        tid = tissue_ids[int(rng.integers(len(tissue_ids)))]
        element = sdata.images[element_names.image_name(tid, "imc")]
        image = element["scale0"]["image"] if "scale0" in element else element
        height, width = image.shape[1:]
        size = min(SIZE, height, width)
        y, x = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        raw = zarr.open_array(opened.image_path(tid, "imc") / "0", mode="r")
        crops.append((image, raw, y, x, size))

    def through_sdata() -> int:
        return sum(int(im[:, y : y + s, x : x + s].values.sum() > 0) for im, _, y, x, s in crops)

    def raw_zarr() -> int:
        return sum(int(raw[:, y : y + s, x : x + s].sum() > 0) for _, raw, y, x, s in crops)

    through_sdata(), raw_zarr()  # warm-up: both read the same chunks into the OS cache
    repeat = 3
    spora_time = baseline_time = float("inf")
    for _ in range(repeat):
        t, _ = timed(through_sdata)
        spora_time = min(spora_time, t)
        t, _ = timed(raw_zarr)
        baseline_time = min(baseline_time, t)
    for im, raw, y, x, s in crops[:3]:  # same pixels
        np.testing.assert_array_equal(im[:, y : y + s, x : x + s].values, raw[:, y : y + s, x : x + s])
    n = len(crops)
    return [
        Result(
            "crop",
            spora_time / baseline_time,
            "<=1.3",
            "SpatialData element crop time / raw zarr crop time",
            {"crops": float(n), "spora ms/crop": 1e3 * spora_time / n, "zarr ms/crop": 1e3 * baseline_time / n},
        )
    ]
