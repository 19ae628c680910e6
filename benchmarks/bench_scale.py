"""Scale: the cost per tissue of every cohort step, from 200 to 2,000 tissues.

Synthetic IMC cohorts (``make_synthetic_cohort``: 128 x 128 px images with a second pyramid level,
3 channels, about 3,000 cells per tissue; four SpatialData elements per tissue: the image and the
cell, tissue and cell-type labels) of 200, 800 and 2,000 tissues (6 M cells). For each size, in a
fresh process (so that memory is that size's alone), the wall time of:

``open_cohort``, ``to_spatialdata``, ``validate``, ``write_spatialdata`` (the SpatialData store),
``read_zarr`` (``spatialdata.read_zarr`` of that store), ``from_spatialdata`` (that store back to a
cohort, without standardization and tiling), ``cell_intensities`` (``compute_cell_intensities``) and
``spatial_neighbors`` (squidpy's graph over every cell, one per tissue, with
``spora_sd.analysis.spatial_neighbors``: squidpy on each tissue's coordinates, assembled into one
CSR matrix; the same result as ``squidpy.gr.spatial_neighbors(library_key="tissue_id")``). Each step is timed once, after all of them ran once on a 10-tissue
cohort in the same process (imports and first-call caches are not the step's).

Goals, printed as ratios:

- ``scale_<step>``: time per tissue at the largest size / time per tissue at the smallest, <= 1.3
  (linear);
- ``scale_write_vs_raw``: ``write_spatialdata`` at 800 tissues / a raw write of the same data in the
  same process: every image and labels level with ``zarr.create_array`` (same chunks, shards and
  codecs as written) and one ``dask.array.store``, plus ``AnnData.write_zarr`` of each table; <= 1.5
  (best of two each, alternating);
- ``scale_open_vs_read_zarr``: ``to_spatialdata`` / ``read_zarr`` at the largest size, <= 0.2;
- ``scale_rss``: at the largest size, the peak RSS increase of each step over the start / (the cell
  table as that step leaves it + 1 GB), the largest of these; <= 1. The steps run as a pipeline that
  holds one SpatialData object at a time (the one from ``to_spatialdata`` until it is written, then
  the one read back until ``from_spatialdata`` has written it), and keeps only what the next steps
  need: after ``from_spatialdata`` that is the cell table of the SpatialData read back, not the
  SpatialData itself (a pipeline drops it too; ``cell_intensities`` reads the cohort).
  ``spatial_neighbors`` writes the graph into that table (``obsp``, as squidpy does by default), so
  its budget counts the graph as part of the table: 0.72 GB of squidpy's two matrices at 5.9 M
  cells, the floor of that step. The details name the step with the largest ratio, and give the
  figure with the graph counted as overhead instead (``graph as overhead``: the graph step's peak /
  (the table without the graph + 1 GB)). Each size's line lists the peak of every step;
- ``scale_neighbors_vs_squidpy``: time and peak RSS increase of ``spatial_neighbors`` / squidpy's own
  ``library_key`` loop on the same table (run last, outside the pipeline's figures; printed for
  reference). squidpy's loop needs about 2.6 GB over its input for 5.9 M cells.

``--quick`` (``make bench-quick``) runs 10 and 30 tissues of 100 cells in this process, each step
once (the write comparison at 10 tissues): a smoke check, whose ratios mean nothing.
Cohorts are made once under ``benchmarks/_work``. ``python benchmarks/bench_scale.py [sizes...]`` runs
the benchmark alone (e.g. ``200 800``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
from common import WORK, PeakRSS, Result, synthetic_cohort

SIZES = {True: (10, 30), False: (200, 800, 2000)}
WRITE_SIZE = {True: 10, False: 800}
CELLS = {True: 100, False: 3000}
STEPS = (
    "open_cohort",
    "to_spatialdata",
    "validate",
    "write_spatialdata",
    "read_zarr",
    "from_spatialdata",
    "cell_intensities",
    "spatial_neighbors",
)
WARM_UP = 10  # tissues: every step runs once on a cohort this size first (imports, first-call caches)


def cohort(n: int, quick: bool) -> Path:
    return synthetic_cohort(
        f"scale2025n{n}",
        quick,
        n_tissues=n,
        modalities=("imc",),
        image_size=128,
        n_channels=3,
        n_cells=CELLS[quick],
        n_levels=2,
        seed=0,
        standardization=False,
        tiling=False,
    )


def _quiet() -> None:
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)  # "no parent found" for every labels element
    logging.getLogger("spora_sd").setLevel(logging.ERROR)
    logging.getLogger("spatialdata._logging").setLevel(logging.WARNING)  # squidpy's "Creating graph using ..."
    warnings.filterwarnings("ignore")


def _time(func: object) -> tuple[float, object]:
    gc.collect()
    t0 = time.perf_counter()
    out = func()  # type: ignore[operator]
    return time.perf_counter() - t0, out


def _nbytes(array: object) -> int:
    """The bytes of a dense array, or of a sparse matrix's arrays (data, indices, offsets)."""
    parts = [getattr(array, a) for a in ("data", "indices", "indptr")] if hasattr(array, "indptr") else [array]
    return sum(int(p.nbytes) for p in parts)


def _table_bytes(table: object) -> int:
    """An AnnData's memory: X, its frames (deep: the strings too) and every aligned array (obsp too)."""
    t = table
    total = _nbytes(t.X) if t.X is not None else 0  # type: ignore[attr-defined]
    for mapping in ("layers", "obsm", "varm", "obsp", "varp"):
        total += sum(_nbytes(v) for v in getattr(t, mapping).values())
    total += int(t.obs.memory_usage(deep=True).sum()) + int(t.var.memory_usage(deep=True).sum())  # type: ignore[attr-defined]
    return total


def _raw_write(sdata: object, written: Path, out: Path) -> None:
    """The baseline: the same arrays with ``zarr.create_array`` and ``dask.array.store``, the tables with anndata."""
    import dask.array as da
    import zarr

    from spora_sd.convert.store import _aligned, _levels

    sources, targets = [], []
    for kind in ("images", "labels"):
        for name, element in getattr(sdata, kind).items():
            for i, level in enumerate(_levels(element)):
                meta = zarr.open_array(written / kind / name / f"s{i}", mode="r")  # what write_spatialdata chose
                target = zarr.create_array(
                    out,
                    name=f"{kind}/{name}/s{i}",
                    shape=meta.shape,
                    dtype=meta.dtype,
                    chunks=meta.chunks,
                    shards=meta.shards,
                    filters=meta.filters,
                    compressors=meta.compressors,
                    serializer=meta.serializer,
                    fill_value=meta.fill_value,
                )
                sources.append(_aligned(level.data, meta.shards or meta.chunks))
                targets.append(target)
    da.store(sources, targets, lock=False)
    for name, table in sdata.tables.items():  # type: ignore[attr-defined]
        table.write_zarr(out / "tables" / name)


def measure(n: int, quick: bool) -> dict[str, object]:
    """Every step at one size (after a warm-up run of every step on ``WARM_UP`` tissues unless quick)."""
    _quiet()
    if not quick:
        _steps(WARM_UP, quick)
    return _steps(n, quick)


def _steps(n: int, quick: bool) -> dict[str, object]:
    """Every step at one size, as a pipeline that keeps one SpatialData object at a time.

    After ``from_spatialdata`` it keeps only the cell table of the SpatialData read back (what
    ``spatial_neighbors`` needs), not the SpatialData.

    The write baseline runs right after ``write_spatialdata`` at ``WRITE_SIZE`` (outside the RSS
    figures); the cell table of ``spatial_neighbors`` is the one read back from the store.
    """
    import spatialdata
    import squidpy as sq

    from spora_sd import compute_cell_intensities, from_spatialdata, open_cohort, to_spatialdata, validate
    from spora_sd.analysis import spatial_neighbors
    from spora_sd.convert.store import write_spatialdata

    path = cohort(n, quick)
    work = WORK / ("quick" if quick else "full") / f"scale_out_{n}"
    store, exported = work / "store.zarr", work / "export" / path.name
    shutil.rmtree(work, ignore_errors=True)  # left by an interrupted run
    times: dict[str, float] = {}
    peaks: dict[str, float] = {}  # peak RSS during each step, over the RSS before the first one
    out: dict[str, object] = {"n": n, "times": times, "peaks": peaks}
    start = psutil.Process().memory_info().rss

    def step(name: str, func: object) -> object:
        with PeakRSS() as rss:
            times[name], result = _time(func)
        peaks[name] = rss.peak - start
        return result

    step("open_cohort", lambda: open_cohort(path))
    sdata = step("to_spatialdata", lambda: to_spatialdata(path))
    out["valid"] = bool(step("validate", lambda: validate(path)).ok)  # type: ignore[attr-defined]
    step("write_spatialdata", lambda: write_spatialdata(sdata, store))
    out["elements"] = len(list(sdata.gen_elements()))  # type: ignore[attr-defined]
    if n == WRITE_SIZE[quick]:
        ours, raw = [times["write_spatialdata"]], []
        for i in range(2):
            shutil.rmtree(work / "raw.zarr", ignore_errors=True)  # deleting is not writing
            raw.append(_time(lambda: _raw_write(sdata, store, work / "raw.zarr"))[0])
            if i == 0:
                ours.append(_time(lambda: write_spatialdata(sdata, work / "again.zarr"))[0])
        out["write"] = {"ours": min(ours), "raw": min(raw)}
    sdata = None  # one SpatialData at a time, as a pipeline would
    back = step("read_zarr", lambda: spatialdata.read_zarr(store))
    step("from_spatialdata", lambda: from_spatialdata(back, exported, standardization=False, tiling=False))
    cells = back.tables["cells"]  # type: ignore[attr-defined]
    back = None  # the steps below need only the cell table: a pipeline keeps that, not the SpatialData
    step("cell_intensities", lambda: compute_cell_intensities(path))
    out.update(cells=int(cells.n_obs), cell_table_bytes=_table_bytes(cells))
    # into the table's obsp, as squidpy does by default and a pipeline keeps it
    step("spatial_neighbors", lambda: spatial_neighbors(cells, coord_type="generic"))
    out.update(graph_bytes=_table_bytes(cells) - out["cell_table_bytes"], load=os.getloadavg()[0])  # type: ignore[operator]
    for key in list(cells.obsp):  # before the baseline runs
        del cells.obsp[key]
    # the baseline, last (its peak would otherwise be the pipeline's): squidpy's own library loop
    with PeakRSS() as rss:
        squidpy_s, graph = _time(
            lambda: sq.gr.spatial_neighbors(cells, library_key="tissue_id", coord_type="generic", copy=True)
        )
    out["squidpy_neighbors"] = {"s": squidpy_s, "peak": rss.peak - start}
    del graph
    cells = None
    shutil.rmtree(work, ignore_errors=True)
    return out


def _in_subprocess(n: int) -> dict[str, object]:
    """``measure(n)`` in a fresh interpreter: the peak RSS is that size's alone."""
    cohort(WARM_UP, False)  # made here, outside the measured process
    cohort(n, False)
    code = f"import json, bench_scale; print('RESULT ' + json.dumps(bench_scale.measure({n}, False)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench_scale at {n} tissues failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def run(quick: bool, sizes: tuple[int, ...] | None = None) -> list[Result]:
    sizes = tuple(sorted(sizes or SIZES[quick]))
    found = {}
    for n in sizes:
        found[n] = measure(n, quick) if quick else _in_subprocess(n)
        print(
            f"#   scale {n} tissues: "
            + ", ".join(f"{k} {v:.3g} s" for k, v in found[n]["times"].items())
            + f" (load average at the end: {found[n].get('load', float('nan')):.1f}); peak RSS increase: "
            + ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in found[n]["peaks"].items()),
            flush=True,
        )
    large = found[sizes[-1]]
    results = []
    for step in STEPS:
        per = {n: found[n]["times"][step] / n for n in sizes}  # type: ignore[index]
        details: dict[str, float | str] = {f"{n} s": found[n]["times"][step] for n in sizes}  # type: ignore[index]
        details.update({f"ms/tissue at {n}": 1000 * per[n] for n in sizes})
        results.append(
            Result(
                f"scale_{step}",
                per[sizes[-1]] / per[sizes[0]],
                "<=1.3",
                f"{step} time per tissue at {sizes[-1]} / at {sizes[0]} tissues",
                details,
            )
        )
    write = next((found[n]["write"] for n in sizes if "write" in found[n]), None)
    if write is not None:
        results.append(
            Result(
                "scale_write_vs_raw",
                write["ours"] / write["raw"],  # type: ignore[index]
                "<=1.5",
                f"write_spatialdata / raw zarr + anndata write of the same data, {WRITE_SIZE[quick]} tissues",
                {"write_spatialdata s": write["ours"], "raw s": write["raw"]},  # type: ignore[index]
            )
        )
    theirs = large["squidpy_neighbors"]  # type: ignore[index]
    results.append(
        Result(
            "scale_neighbors_vs_squidpy",
            large["times"]["spatial_neighbors"] / theirs["s"],  # type: ignore[index]
            "<=1.3",
            f"spatial_neighbors time / squidpy's library_key loop time, {sizes[-1]} tissues",
            {
                "ours s": large["times"]["spatial_neighbors"],  # type: ignore[index]
                "squidpy s": theirs["s"],
                "ours peak MB": large["peaks"]["spatial_neighbors"] / 2**20,  # type: ignore[index]
                "squidpy peak MB": theirs["peak"] / 2**20,
            },
        )
    )
    lt = large["times"]
    results.append(
        Result(
            "scale_open_vs_read_zarr",
            lt["to_spatialdata"] / lt["read_zarr"],  # type: ignore[index]
            "<=0.2",
            f"to_spatialdata / spatialdata.read_zarr, {sizes[-1]} tissues",
            {"to_spatialdata s": lt["to_spatialdata"], "read_zarr s": lt["read_zarr"]},  # type: ignore[index]
        )
    )
    mb = 2**20
    peaks = large["peaks"]  # type: ignore[index]
    table = large["cell_table_bytes"] + 1024 * mb  # type: ignore[operator]
    budgets = {k: table + (large["graph_bytes"] if k == "spatial_neighbors" else 0) for k in peaks}  # type: ignore[operator]
    ratios = {k: peaks[k] / budgets[k] for k in peaks}  # type: ignore[index]
    worst = sorted(ratios, key=ratios.get, reverse=True)  # type: ignore[arg-type]
    results.append(
        Result(
            "scale_rss",
            ratios[worst[0]],
            "<=1.0",
            f"peak RSS increase of each step / (the cell table it leaves + 1 GB), the largest, {sizes[-1]} tissues",
            {
                "in": worst[0],
                "peak MB": peaks[worst[0]] / mb,  # type: ignore[index]
                "budget MB": budgets[worst[0]] / mb,
                **{f"{name} / budget": ratios[name] for name in worst[1:3]},
                "graph MB": large["graph_bytes"] / mb,  # type: ignore[operator]
                # the stricter reading: the graph step's outputs counted as overhead, not as the table's
                "graph as overhead": peaks["spatial_neighbors"] / table,  # type: ignore[index]
                "cell table MB": large["cell_table_bytes"] / mb,  # type: ignore[operator]
                "cells": float(large["cells"]),  # type: ignore[arg-type]
                "elements": float(large["elements"]),  # type: ignore[arg-type]
                "valid": str(all(found[n]["valid"] for n in sizes)),
            },
        )
    )
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("sizes", nargs="*", type=int, help="numbers of tissues (default: 200 800 2000)")
    args = parser.parse_args()
    for result in run(args.quick, tuple(args.sizes) or None):
        print(result.line(), flush=True)
