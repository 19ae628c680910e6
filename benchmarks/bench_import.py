"""Import throughput: ``from_ai4bmr`` against a raw Zarr write of the same arrays.

The source is a synthetic folder in the ai4bmr-datasets processed layout
(:func:`spora_sd.importers.synthetic_ai4bmr.make_ai4bmr_folder`): float32 ``C x H x W`` images written
as ai4bmr writes them (tifffile, zstd), uint16 masks, panel, clinical and per-cell tables. Both
contenders read the same TIFFs in the same process, alternating, best of ``repeat`` runs each:

- **import**: ``from_ai4bmr(src, out, standardization=False, tiling=False)``: OME-Zarr v3 images,
  ``.npz`` masks (instance and full tissue masks), the cell table joined from the per-cell Parquet
  files, the other tables, the manifest, atomic rename;
- **baseline**: each TIFF read with ``tifffile.imread`` and written with ``zarr.create_array`` with the
  same chunks ``(C, 256, 256)``, shards and codecs as the imported images (read from them). No masks,
  no tables: pure array reading and writing.

The ratio is import throughput / baseline throughput (= baseline time / import time); goal >= 0.7. The
default import, which also computes the standardization statistics and the tiling, is timed once for
information, with the import's peak RSS against one sample's image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tifffile
import zarr
from common import WORK, PeakRSS, Result, timed

from spora_sd.importers import from_ai4bmr
from spora_sd.importers.synthetic_ai4bmr import make_ai4bmr_folder
from spora_sd.importers.targets import target_table
from spora_sd.io.images import CHUNK_SIZE, shard_shape

SIZES = {
    True: {"n_samples": 3, "n_channels": 5, "size": 200, "repeat": 1},
    False: {"n_samples": 20, "n_channels": 40, "size": 1000, "repeat": 2},
}


def _source(quick: bool) -> Path:
    """The ai4bmr-shaped folder; made once and reused across runs."""
    p = SIZES[quick]
    root = WORK / ("quick" if quick else "full") / "import_source"
    src = root / "Jackson2020"
    done = root / ".complete"
    if done.is_file():
        return src
    if root.exists():
        shutil.rmtree(root)
    known = list(dict.fromkeys(target_table().drop_duplicates("channel_name")["target"]))[: p["n_channels"]]
    make_ai4bmr_folder(root, n_samples=p["n_samples"], size=p["size"], cell_side=10, targets=known)
    done.touch()
    return src


def _raw_write(src: Path, out: Path, codecs: dict) -> None:
    """The baseline: every TIFF read, then written as one sharded Zarr v3 array, same chunks, shards and codecs."""
    if out.exists():
        shutil.rmtree(out)
    for path in sorted((src / "02_processed/images/published").glob("*.tiff")):
        data = tifffile.imread(path)
        arr = zarr.create_array(
            out / path.stem,
            shape=data.shape,
            dtype=data.dtype,
            chunks=(data.shape[0], CHUNK_SIZE, CHUNK_SIZE),
            shards=shard_shape(data.shape),
            fill_value=0,
            **codecs,
        )
        arr[...] = data


def run(quick: bool) -> list[Result]:
    p = SIZES[quick]
    src = _source(quick)
    out = WORK / ("quick" if quick else "full") / "import_out"
    raw = out / "raw_arrays"

    def run_import() -> Path:
        return from_ai4bmr(src, out, overwrite=True, standardization=False, tiling=False)

    cohort = run_import()  # warm-up (imports, first-use costs); also gives the codecs the baseline copies
    first = next((cohort / "imc/1_0mpp/images").iterdir()) / "0"
    level0 = zarr.open_array(first, mode="r")
    codecs = {"compressors": level0.compressors, "filters": level0.filters, "serializer": level0.serializer}

    import_times, raw_times = [], []
    peak = 0
    for _ in range(p["repeat"]):  # alternate, so that load from other processes hits both alike
        with PeakRSS() as rss:
            t_import, _ = timed(run_import)
        peak = max(peak, rss.delta)
        import_times.append(t_import)
        t_raw, _ = timed(lambda: _raw_write(src, raw, codecs))
        raw_times.append(t_raw)
    t_default, _ = timed(lambda: from_ai4bmr(src, out, overwrite=True))
    t_import, t_raw = min(import_times), min(raw_times)
    image_bytes = p["n_channels"] * p["size"] ** 2 * 4
    total_mb = p["n_samples"] * image_bytes / 1e6
    shutil.rmtree(raw, ignore_errors=True)
    return [
        Result(
            name="import_throughput",
            ratio=t_raw / t_import,
            goal=">=0.7",
            what="from_ai4bmr throughput (MB/s of image data) / TIFF read + raw zarr write, same arrays and codecs",
            details={
                "images": f"{p['n_samples']}x({p['n_channels']},{p['size']},{p['size']}) float32",
                "import s": t_import,
                "raw zarr s": t_raw,
                "import MB/s": total_mb / t_import,
                "raw MB/s": total_mb / t_raw,
                "peak RSS delta MB": peak / 1e6,
                "peak RSS / one image": peak / image_bytes,
                "import with stats+tiling s": t_default,
            },
        )
    ]
