"""Open: ``to_spatialdata`` of a spora cohort against ``spatialdata.read_zarr`` of the same data.

The cohort is synthetic (200 tissues of about 1000 x 1000 px, 30 IMC channels, about 3,000 cells each,
two pyramid levels). The baseline store is that cohort converted once and written by spatialdata
(``sdata.write``): the same images, labels and tables in spatialdata's own on-disk format. Both sides
build a lazy SpatialData object (no pixel read); ``to_spatialdata`` also computes every cell centroid
from the instance masks, which ``read_zarr`` reads back from the stored table.

Reported: best-of-``repeat`` wall time of each (alternating, after one warm-up call each, so imports
and first-call caches are excluded), and the peak RSS increase of the first (cold) ``to_spatialdata``
call against the in-memory size of its tables plus 300 MB.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from common import WORK, PeakRSS, Result, imc_cohort, timed

SIZES = {
    True: {"n_tissues": 3, "image_size": 200, "n_channels": 5, "n_cells": 50, "repeat": 1},
    False: {"n_tissues": 200, "image_size": 1000, "n_channels": 30, "n_cells": 3000, "repeat": 3},
}
NAME = "bench2025open"


def cohort(quick: bool) -> Path:
    """The benchmark cohort (shared with bench_crop), made once."""
    return imc_cohort(NAME, quick, SIZES[quick])


def _reference(quick: bool, path: Path) -> Path:
    """The same data written once by spatialdata."""
    from spora_sd import to_spatialdata
    from spora_sd.convert.store import write_spatialdata

    store = WORK / ("quick" if quick else "full") / "open_reference.zarr"
    if not (store / "zarr.json").is_file():
        write_spatialdata(to_spatialdata(path), store, overwrite=True)
    return store


def _table_bytes(sdata: object) -> int:
    total = 0
    for table in sdata.tables.values():  # type: ignore[attr-defined]
        total += table.X.nbytes if table.X is not None else 0
        total += sum(v.nbytes for v in table.obsm.values())
        total += int(table.obs.memory_usage(deep=True).sum()) + int(table.var.memory_usage(deep=True).sum())
    return total


def run(quick: bool) -> list[Result]:
    import spatialdata  # imported before the RSS baseline: import cost is not the converter's

    from spora_sd import to_spatialdata

    logging.getLogger("ome_zarr").setLevel(logging.ERROR)  # "no parent found" for every labels element
    warnings.filterwarnings("ignore", category=UserWarning)
    p = SIZES[quick]
    path = cohort(quick)
    store = _reference(quick, path)

    with PeakRSS() as rss:
        sdata = to_spatialdata(path)
    table_bytes = _table_bytes(sdata)
    n_elements = len(list(sdata.gen_elements()))
    del sdata
    spatialdata.read_zarr(store)  # warm-up of the baseline
    spora_time = baseline_time = float("inf")
    for _ in range(p["repeat"]):
        t, _ = timed(lambda: to_spatialdata(path))
        spora_time = min(spora_time, t)
        t, _ = timed(lambda: spatialdata.read_zarr(store))
        baseline_time = min(baseline_time, t)
    mb = 2**20
    budget = table_bytes + 300 * mb
    return [
        Result(
            "open",
            spora_time / baseline_time,
            "<=1.0",
            "to_spatialdata time / spatialdata.read_zarr time",
            {
                "tissues": float(p["n_tissues"]),
                "elements": float(n_elements),
                "spora s": spora_time,
                "read_zarr s": baseline_time,
            },
        ),
        Result(
            "open_rss",
            rss.delta / budget,
            "<=1.0",
            "peak RSS increase of to_spatialdata / (tables + 300 MB)",
            {"rss MB": rss.delta / mb, "tables MB": table_bytes / mb},
        ),
    ]
