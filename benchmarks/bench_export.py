"""Export throughput: ``from_spatialdata`` against a raw Zarr write of the same arrays.

The source is a SpatialData Zarr store on disk (images, instance labels, a cell table), opened lazily
with ``spatialdata.read_zarr``, as ``spora-sd export SDATA.zarr`` sees it. Both contenders read the same
lazy arrays in the same process, alternating, best of ``repeat`` runs each:

- **export**: ``from_spatialdata(sdata, out, standardization=False, tiling=False)``: OME-Zarr v3 images,
  ``.npz`` masks (instance and full tissue masks), the five Parquet tables, atomic rename;
- **baseline**: each image written with ``zarr.create_array`` with the same chunks ``(C, 256, 256)``,
  the same shards and the same codecs as the exported images (read from them), through
  ``dask.array.store`` of the source rechunked to the shards (streaming, parallel, no partial-shard
  writes). No masks, no tables: pure array writing.

The ratio is export throughput / baseline throughput (= baseline time / export time); goal >= 0.7.
Peak RSS of the export (sampled every 10 ms) is reported against the size of one tissue's image: the
export streams one tissue at a time, so it should stay near 2x one image. The default export, which
also computes the standardization statistics and the tiling, is timed once for information.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from common import WORK, PeakRSS, Result, timed

from spora_sd import from_spatialdata
from spora_sd.io.images import CHUNK_SIZE, shard_shape

SIZES = {
    True: {"n_tissues": 2, "n_channels": 3, "size": 300, "n_cells": 50, "repeat": 1},
    False: {"n_tissues": 4, "n_channels": 20, "size": 2000, "n_cells": 3000, "repeat": 2},
}


def _pixels(rng: np.random.Generator, c: int, size: int) -> np.ndarray:
    """IMC-like counts: smooth structure (16 px blobs) plus Poisson noise, uint16, moderately compressible."""
    low = rng.gamma(2.0, 50.0, (c, -(-size // 16), -(-size // 16)))
    smooth = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :size, :size]
    return rng.poisson(smooth).astype("uint16")


def _mask(rng: np.random.Generator, size: int, n_cells: int) -> np.ndarray:
    """Square cells on a grid, labels 1..n."""
    side = max(2, int(size / np.ceil(np.sqrt(n_cells))))
    grid = np.arange(size) // side
    per_row = -(-size // side)
    labels = (grid[:, None] * per_row + grid[None, :] + 1).astype("uint32")
    labels[(np.arange(size) % side == 0)[:, None] | (np.arange(size) % side == 0)[None, :]] = 0  # borders
    return labels


def _source(quick: bool) -> Path:
    """The SpatialData store the benchmark exports; made once and reused across runs."""
    import anndata as ad
    import pandas as pd
    import spatialdata as sd
    from spatialdata.models import Image2DModel, Labels2DModel, TableModel
    from spatialdata.transformations import Scale

    p = SIZES[quick]
    path = WORK / ("quick" if quick else "full") / "export_source.zarr"
    if (path / "zarr.json").is_file():
        return path
    rng = np.random.default_rng(0)
    images, labels, tables = {}, {}, []
    markers = [f"M{i}" for i in range(p["n_channels"])]
    for t in range(p["n_tissues"]):
        cs = {f"s{t}": Scale([1.0, 1.0], axes=("y", "x"))}
        pixels = _pixels(rng, p["n_channels"], p["size"])
        chunks = (p["n_channels"], 1024, 1024)
        images[f"s{t}_image"] = Image2DModel.parse(
            pixels, dims=("c", "y", "x"), c_coords=markers, transformations=cs, chunks=chunks
        )
        mask = _mask(rng, p["size"], p["n_cells"])
        labels[f"s{t}_labels"] = Labels2DModel.parse(mask, dims=("y", "x"), transformations=cs, chunks=(1024, 1024))
        ids = np.unique(mask)[1:]
        obs = pd.DataFrame({"region": f"s{t}_labels", "cell_id": ids, "area": rng.integers(5, 50, ids.size)})
        tables.append(ad.AnnData(rng.random((ids.size, len(markers))).astype("float32"), obs=obs))
    table = ad.concat(tables, index_unique="-")
    table.var_names = markers
    table.obs["region"] = pd.Categorical(table.obs["region"])
    table = TableModel.parse(table, region=sorted(labels), region_key="region", instance_key="cell_id")
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd.SpatialData(images=images, labels=labels, tables={"table": table}).write(path)
    return path


def _raw_write(sdata: object, out: Path, codecs: dict) -> None:
    """The baseline: every image as one sharded Zarr v3 array, same chunks, shards and codecs."""
    if out.exists():
        shutil.rmtree(out)
    for name, element in sdata.images.items():  # type: ignore[attr-defined]
        src = element.data
        shards = shard_shape(src.shape)
        arr = zarr.create_array(
            out / name,
            shape=src.shape,
            dtype=src.dtype,
            chunks=(src.shape[0], CHUNK_SIZE, CHUNK_SIZE),
            shards=shards,
            fill_value=0,
            **codecs,
        )
        da.store(src.rechunk(shards), arr, lock=False)


def run(quick: bool) -> list[Result]:
    import spatialdata as sd

    p = SIZES[quick]
    sdata = sd.read_zarr(_source(quick))  # lazy: pixels are read during the writes
    out = WORK / ("quick" if quick else "full") / "export_out"
    target = out / "bench2025export"
    raw = out / "raw_arrays"

    def export() -> Path:
        return from_spatialdata(sdata, target, overwrite=True, standardization=False, tiling=False)

    export()  # warm-up (imports, first-use costs); also gives the codecs the baseline copies
    first = next((target / "imc/1_0mpp/images").iterdir()) / "0"
    level0 = zarr.open_array(first, mode="r")
    codecs = {"compressors": level0.compressors, "filters": level0.filters, "serializer": level0.serializer}

    export_times, raw_times = [], []
    peak = 0
    for _ in range(p["repeat"]):  # alternate, so that load from other processes hits both alike
        with PeakRSS() as rss:
            t_export, _ = timed(export)
        peak = max(peak, rss.delta)
        export_times.append(t_export)
        t_raw, _ = timed(lambda: _raw_write(sdata, raw, codecs))
        raw_times.append(t_raw)
    t_default, _ = timed(lambda: from_spatialdata(sdata, target, overwrite=True))
    t_export, t_raw = min(export_times), min(raw_times)
    image_bytes = p["n_channels"] * p["size"] ** 2 * 2
    total_mb = p["n_tissues"] * image_bytes / 1e6
    return [
        Result(
            name="export_throughput",
            ratio=t_raw / t_export,
            goal=">=0.7",
            what="from_spatialdata throughput / raw zarr write throughput, same arrays, codec and sharding",
            details={
                "images": f"{p['n_tissues']}x({p['n_channels']},{p['size']},{p['size']}) uint16",
                "export s": t_export,
                "raw zarr s": t_raw,
                "export MB/s": total_mb / t_export,
                "raw MB/s": total_mb / t_raw,
                "peak RSS delta MB": peak / 1e6,
                "peak RSS / one image": peak / image_bytes,
                "export with stats+tiling s": t_default,
            },
        )
    ]
