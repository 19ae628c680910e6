"""LaminDB at cohort scale: in-place registration, re-registration, fingerprint, search.

On a local SQLite instance (the embedded default) made in a temporary LaminDB settings folder, in
a fresh process (lamindb's settings are read at import), with the scale benchmark's cohorts
(``bench_scale.cohort``: 128 x 128 px IMC images, 3,000 cells per tissue):

- ``lamin_register_in_place``: ``register(cohort)`` in place, 200 tissues / the same cohort
  registered as a SpatialData copy (``mode="spatialdata"``, what register did before) in the same
  process; goal <= 0.15 (in place <= 10 s where the copy took 68 s);
- ``lamin_reregister``: ``register`` again of the unchanged 200-tissue cohort / LaminDB's own folder
  hash of it (``hash_dir``: what LaminDB reads to decide that nothing changed); goal <= 1, and
  <= 2 s;
- ``lamin_fingerprint_vs_hash``: :func:`spora_sd.lamin.fingerprint.cohort_fingerprint` / ``hash_dir``
  at 2,000 tissues (130 MB in 16,000 files); goal <= 0.1;
- ``lamin_register_2000``: in-place registration of the 2,000-tissue cohort / its 60 s budget;
  goal <= 1;
- ``lamin_search_100``: ``search(tissue=..., disease=...)`` with 100 registered cohorts / its 0.2 s
  budget; goal <= 1. The details give lamindb's per-artifact ``features.get_values()`` listing
  (what search did before) for comparison.

Straight from a bucket (moto's S3 server on loopback, ``tests/servers.py``, in the measuring process,
with its request log):

- ``lamin_remote_bytes``: ``register("s3://spora/<dataset>")`` of the 200-tissue cohort uploaded
  there: bytes of the objects the server sent (listings aside) / bytes of the cohort's tables and
  metadata (every object that is not an image store or a mask); goal <= 1, and no image or mask
  request (the details count them, and give the listing bytes, the requests and the time);
- ``lamin_catalogue``: :func:`spora_sd.lamin.register_catalogue` over four registry keys backed by
  synthetic 20-tissue cohorts in the bucket plus one key with no copy, time per reachable cohort /
  10 s (the in-place budget of a 200-tissue cohort); goal <= 1. The details give the rerun's time
  per cohort (all unchanged).

``--quick`` runs 10- and 30-tissue cohorts of 100 cells, 5 registered cohorts and a catalogue of
one-tissue cohorts, without the copy baseline's full size: a smoke check, whose ratios mean
nothing. ``python benchmarks/bench_lamin.py [--quick] [--remote]`` runs it alone (``--remote``: the
bucket part only).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import Result

SIZES = {True: (10, 30), False: (200, 2000)}
#: registry keys of the catalogue benchmark: backed by a synthetic cohort in the bucket, or no copy
CATALOGUE_HOSTED = ("jackson2020single", "cords2024cancer", "keren2018structured", "danenberg2022breast")
CATALOGUE_MISSING = ("schurch2020coordinated",)
CATALOGUE_TISSUES = {True: 1, False: 20}
N_SEARCH = {True: 5, False: 100}
LABELS = {"tissue": "lung", "disease": "non-small cell lung carcinoma", "organism": "human"}


def _quiet() -> None:
    for name in ("ome_zarr", "spora_sd", "lamindb", "bionty", "lamindb_setup", "spatialdata"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _timed(func: object) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = func()  # type: ignore[operator]
    return time.perf_counter() - t0, out


def _tiny_cohorts(root: Path, n: int) -> list[Path]:
    """``n`` one-tissue cohorts for the search benchmark, half lung / NSCLC, half breast / TNBC."""
    import spora_sd

    out = []
    for i in range(n):
        out.append(
            spora_sd.make_synthetic_cohort(
                root,
                name=f"search{i:03d}2025synthetic",
                n_tissues=1,
                image_size=32,
                n_cells=8,
                modalities=("imc",),
                seed=i,
                standardization=False,
                tiling=False,
            )
        )
    return out


def _old_search_listing() -> None:
    """What ``search`` did before: the features of every artifact, one artifact at a time."""
    import lamindb as ln

    for artifact in ln.Artifact.filter(key__startswith="spora/", is_latest=True).order_by("key"):
        artifact.features.get_values()


def _is_pixels(path: str) -> bool:
    """Whether an object path (or request path) is part of an image store or a cell mask."""
    return ".zarr/" in path or path.endswith(".zarr") or path.endswith(".npz")


def _catalogue_cohorts(root: Path, quick: bool) -> list[Path]:
    import spora_sd

    sizes = {"image_size": 32 if quick else 128, "n_cells": 8 if quick else 500, "modalities": ("imc",)}
    return [
        spora_sd.make_synthetic_cohort(
            root,
            name=key,
            n_tissues=CATALOGUE_TISSUES[quick],
            seed=i,
            standardization=False,
            tiling=False,
            **sizes,  # type: ignore[arg-type]
        )
        for i, key in enumerate(CATALOGUE_HOSTED)
    ]


def measure_remote(quick: bool, work: Path) -> dict[str, object]:
    """The bucket figures (an instance is connected): bytes of a remote registration, catalogue time."""
    from bench_scale import cohort

    from spora_sd.lamin import register, register_catalogue

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from servers import S3Server

    out: dict[str, object] = {}
    small = cohort(SIZES[quick][0], quick)
    hosted = _catalogue_cohorts(work / "catalogue", quick)
    with S3Server() as s3:
        url = s3.upload_folder(small, small.name)
        for path in hosted:
            s3.upload_folder(path, path.name)  # the registry's location: s3://spora/<key>
        files = [p for p in small.rglob("*") if p.is_file()]
        out["remote_cohort_bytes"] = sum(p.stat().st_size for p in files)
        out["remote_table_bytes"] = sum(p.stat().st_size for p in files if not _is_pixels(p.as_posix()))
        with s3.log.recording() as log:
            out["remote_register"], _ = _timed(lambda: register(url, storage_options=s3.storage_options, **LABELS))
        entries = list(log.entries)
        listing = [e for e in entries if "list-type=2" in e[1]]
        objects = [e for e in entries if "list-type=2" not in e[1]]
        out["remote_requests"] = len(entries)
        out["remote_listing_bytes"] = sum(n for _, _, n in listing)
        out["remote_object_bytes"] = sum(n for _, _, n in objects)
        out["remote_pixel_requests"] = sum(1 for _, p, _ in entries if _is_pixels(p.split("?", 1)[0]))

        os.environ.update(s3.env())  # as a user would: the AWS variables, no local copy
        os.environ["SPORA_DATASETS_DIR"] = str(work / "no-local-copies")
        keys = [*CATALOGUE_HOSTED, *CATALOGUE_MISSING]
        with s3.log.recording() as log:
            out["catalogue"], first = _timed(lambda: register_catalogue(keys))
        out["catalogue_pixel_requests"] = sum(1 for p in log.paths() if _is_pixels(p.split("?", 1)[0]))
        out["catalogue_rerun"], again = _timed(lambda: register_catalogue(keys))
        out["catalogue_summary"] = first.summary()  # type: ignore[attr-defined]
        out["catalogue_rerun_summary"] = again.summary()  # type: ignore[attr-defined]
        out["catalogue_reachable"] = len(CATALOGUE_HOSTED)
        out["catalogue_tissues"] = CATALOGUE_TISSUES[quick]
    return out


def measure(quick: bool, parts: tuple[str, ...] = ("local", "remote")) -> dict[str, object]:
    """Every figure, in this process (which must not have imported lamindb yet)."""
    from bench_scale import cohort

    work = Path(tempfile.mkdtemp(prefix="bench-lamin-"))
    os.environ["LAMIN_SETTINGS_DIR"] = str(work / "settings")
    os.environ["LAMIN_CACHE_DIR"] = str(work / "settings" / "cache")
    _quiet()
    try:
        from lamindb_setup.core.hashing import hash_dir

        from spora_sd.lamin import init_instance, register, search
        from spora_sd.lamin.fingerprint import cohort_fingerprint

        init_instance(work / "instance", name="bench-lamin")
        out: dict[str, object] = {"sizes": SIZES[quick]}
        # warm-up: imports, ontology indexes, schema (a tiny cohort, registered both ways)
        warm = _tiny_cohorts(work / "warm", 1)[0]
        register(warm, **LABELS)
        register(warm, mode="spatialdata", **LABELS)
        if "remote" in parts:
            out.update(measure_remote(quick, work))
        if "local" not in parts:
            return out
        small, large = (cohort(n, quick) for n in SIZES[quick])

        out["in_place"], _ = _timed(lambda: register(small, **LABELS))
        out["reregister"], _ = _timed(lambda: register(small))
        out["hash_dir_small"], _ = _timed(lambda: hash_dir(small))
        out["copy"], _ = _timed(lambda: register(small, mode="spatialdata", **LABELS))

        out["fingerprint_large"], fp = _timed(lambda: cohort_fingerprint(large))
        out["hash_dir_large"], _ = _timed(lambda: hash_dir(large))
        out["large_files"] = fp.n_files  # type: ignore[attr-defined]
        out["large_bytes"] = fp.size  # type: ignore[attr-defined]
        out["in_place_large"], _ = _timed(lambda: register(large, **LABELS))

        tiny = _tiny_cohorts(work / "search", N_SEARCH[quick] - 4)  # + warm, small, large, small's copy
        for i, path in enumerate(tiny):
            labels = (
                LABELS
                if i % 2
                else {"tissue": "breast", "disease": "triple-negative breast carcinoma", "organism": "human"}
            )
            register(path, **labels)
        search(tissue="lung", disease="lung carcinoma")  # warm-up
        out["search"], hits = _timed(lambda: search(tissue="lung", disease="lung carcinoma"))
        out["search_hits"] = len(hits)  # type: ignore[arg-type]
        out["search_all"], found = _timed(lambda: search())
        out["registered"] = len(found)  # type: ignore[arg-type]
        out["old_listing"], _ = _timed(_old_search_listing)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _in_subprocess(quick: bool, parts: tuple[str, ...]) -> dict[str, object]:
    from bench_scale import cohort

    for n in SIZES[quick]:
        cohort(n, quick)  # made here, outside the measured process
    code = f"import json, bench_lamin; print('RESULT ' + json.dumps(bench_lamin.measure({quick}, {parts!r})))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench_lamin failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def _remote_results(m: dict[str, object]) -> list[Result]:
    small = m["sizes"][0]  # type: ignore[index]
    reachable = m["catalogue_reachable"]
    return [
        Result(
            "lamin_remote_bytes",
            m["remote_object_bytes"] / m["remote_table_bytes"],  # type: ignore[operator]
            "<=1",
            f"register s3://... in place, {small} tissues: object bytes read / tables + metadata bytes",
            {
                "image or mask requests": float(m["remote_pixel_requests"]),  # type: ignore[arg-type]
                "requests": float(m["remote_requests"]),  # type: ignore[arg-type]
                "listing MB": m["remote_listing_bytes"] / 1e6,  # type: ignore[operator]
                "tables MB": m["remote_table_bytes"] / 1e6,  # type: ignore[operator]
                "cohort MB": m["remote_cohort_bytes"] / 1e6,  # type: ignore[operator]
                "register s": m["remote_register"],  # type: ignore[dict-item]
            },
        ),
        Result(
            "lamin_catalogue",
            m["catalogue"] / reachable / 10.0,  # type: ignore[operator]
            "<=1",
            f"register_catalogue, {reachable} hosted {m['catalogue_tissues']}-tissue cohorts + 1 without a copy: "
            "s per reachable cohort / 10 s",
            {
                "catalogue s": m["catalogue"],  # type: ignore[dict-item]
                "rerun s per cohort": m["catalogue_rerun"] / reachable,  # type: ignore[operator]
                "image or mask requests": float(m["catalogue_pixel_requests"]),  # type: ignore[arg-type]
                "first": str(m["catalogue_summary"]),
                "rerun": str(m["catalogue_rerun_summary"]),
            },
        ),
    ]


def run(quick: bool, parts: tuple[str, ...] = ("local", "remote")) -> list[Result]:
    m = _in_subprocess(quick, parts)
    small, large = m["sizes"]  # type: ignore[misc]
    print(f"#   lamin: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()})}", flush=True)
    remote = _remote_results(m) if "remote" in parts else []
    if "local" not in parts:
        return remote
    return remote + [
        Result(
            "lamin_register_in_place",
            m["in_place"] / m["copy"],  # type: ignore[operator]
            "<=0.15",
            f"register in place / register as a SpatialData copy, {small} tissues",
            {"in place s": m["in_place"], "copy s": m["copy"], "goal s": 10.0},  # type: ignore[dict-item]
        ),
        Result(
            "lamin_reregister",
            m["reregister"] / m["hash_dir_small"],  # type: ignore[operator]
            "<=1",
            f"register again, unchanged / LaminDB's folder hash (hash_dir), {small} tissues",
            {"reregister s": m["reregister"], "hash_dir s": m["hash_dir_small"], "goal s": 2.0},  # type: ignore[dict-item]
        ),
        Result(
            "lamin_fingerprint_vs_hash",
            m["fingerprint_large"] / m["hash_dir_large"],  # type: ignore[operator]
            "<=0.1",
            f"cohort_fingerprint / LaminDB's hash_dir, {large} tissues",
            {
                "fingerprint s": m["fingerprint_large"],  # type: ignore[dict-item]
                "hash_dir s": m["hash_dir_large"],  # type: ignore[dict-item]
                "files": float(m["large_files"]),  # type: ignore[arg-type]
                "MB": m["large_bytes"] / 1e6,  # type: ignore[operator]
            },
        ),
        Result(
            "lamin_register_2000",
            m["in_place_large"] / 60.0,  # type: ignore[operator]
            "<=1",
            f"register in place, {large} tissues / 60 s",
            {"in place s": m["in_place_large"]},  # type: ignore[dict-item]
        ),
        Result(
            "lamin_search_100",
            m["search"] / 0.2,  # type: ignore[operator]
            "<=1",
            f"search(tissue, disease) with {m['registered']} registered cohorts / 0.2 s",
            {
                "search s": m["search"],  # type: ignore[dict-item]
                "hits": float(m["search_hits"]),  # type: ignore[arg-type]
                "search() all s": m["search_all"],  # type: ignore[dict-item]
                "get_values listing s": m["old_listing"],  # type: ignore[dict-item]
            },
        ),
    ]


if __name__ == "__main__":
    for result in run(
        quick="--quick" in sys.argv, parts=("remote",) if "--remote" in sys.argv else ("local", "remote")
    ):
        print(result.line())
