"""Fetch: ``spora_sd.fetch`` of one modality against ``rclone copy`` of the same files, and resume.

A synthetic cohort (IMC for every tissue, H&E for one; about 1 GB of IMC in the full run) is uploaded
to moto's S3 server on loopback (``tests/servers.py``, in this process). Both clients run as separate
processes against it, alternating, best of ``repeat`` runs each, into fresh folders:

- **fetch**: ``spora_sd.fetch(url, dest, modalities=["imc"])`` with 8 workers; the time is that of
  the call, measured inside its process (the interpreter start and the import of s3fs are not
  counted: one-time costs of a process, not of the transfer);
- **baseline**: ``rclone copy`` of exactly the files that fetch copies (``--files-from``), with
  ``--transfers 8``, through the rclone remote that the S3 server's ``rclone.conf`` defines. Its
  time is the wall time of the ``rclone`` process.

The ratio is fetch throughput / rclone throughput (= rclone time / fetch time); goal >= 0.9.

**Resume**: a fetch is killed (SIGKILL, ``SPORA_SD_FAULT_POINT=fetch.part_written@<n>``) when half of
its blocks are written, then rerun; the ratio is the bytes the server sent during the rerun (its own
request log; the manifest, read again by every fetch, excluded) over the bytes that were not on disk
after the kill; goal <= 1.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import WORK, Result, synthetic_cohort

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

NAME = "fetch2025bench"
SIZES = {
    True: {"n_tissues": 2, "image_size": 300, "n_channels": 8, "n_cells": 50, "repeat": 1},
    False: {"n_tissues": 12, "image_size": 3000, "n_channels": 30, "n_cells": 2000, "repeat": 2},
}
WORKERS = 8
MANIFEST = "metadata/manifest.json"

_CHILD = """
import json, sys, time
import spora_sd.io.fetch as fetch_module

import s3fs, upath  # noqa: F401  (imported before the clock starts: a one-time cost, not throughput)

args = json.loads(sys.argv[1])
t0 = time.perf_counter()
fetch_module.fetch(args["url"], args["dest"], modalities=["imc"], storage_options=args["options"],
                   workers=args["workers"])
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _cohort(quick: bool) -> Path:
    p = SIZES[quick]
    sizes = {k: v for k, v in p.items() if k != "repeat"}
    return synthetic_cohort(NAME, quick, modalities=("imc", "he"), he_tissues=[0], tiling=False, **sizes)


def _fetch_process(url: str, dest: Path, options: dict, env: dict[str, str] | None = None) -> tuple[int, float]:
    """Run a fetch in a child process; its exit code and the time of the fetch call (NaN if killed)."""
    job = json.dumps({"url": url, "dest": str(dest), "options": options, "workers": WORKERS})
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, job], env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if done.returncode == 0:
        return 0, json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    if done.returncode != -9:
        raise RuntimeError(f"fetch failed:\n{done.stderr[-3000:]}")
    return done.returncode, float("nan")


def _rclone(remote: str, files: Path, dest: Path, conf: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        ["rclone", "copy", remote, str(dest), "--files-from", str(files), "--transfers", str(WORKERS)],
        # rclone 1.60's S3 client refuses AWS_CA_BUNDLE with its own transport (the endpoint is plain http)
        env={**{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}, "RCLONE_CONFIG": str(conf)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"rclone failed:\n{done.stderr[-3000:]}")
    return seconds


def _on_disk(dest: Path) -> dict[str, int]:
    """Bytes per file already on disk after a kill (staging folder, part files included)."""
    staged = dest.with_name(f".{dest.name}.tmp-fetch") / dest.name
    out: dict[str, int] = {}
    for path in staged.rglob("*") if staged.is_dir() else []:
        if path.is_file():
            name = path.name
            if name.endswith(".tmp-part"):
                name = name[1 : -len(".tmp-part")]
            elif name.startswith("."):
                continue
            out[(path.parent / name).relative_to(staged).as_posix()] = path.stat().st_size
    return out


def run(quick: bool) -> list[Result]:
    from servers import S3Server

    import spora_sd.io.fetch as fetch_module
    import spora_sd.io.fetch.transfer as fetch_transfer
    from spora_sd.io.atomic import FAULT_POINT_ENV

    p = SIZES[quick]
    source = _cohort(quick)
    work = Path(tempfile.mkdtemp(dir=WORK, prefix="fetch-"))
    try:
        with S3Server() as s3:
            url = s3.upload_folder(source, NAME)
            conf = s3.rclone_config(work / "rclone.conf")
            options = s3.storage_options
            server_rss = psutil.Process().memory_info().rss

            # warm-up, and the list of the files fetch copies (the baseline copies the same)
            reference = work / "reference" / NAME
            fetch_module.fetch(url, reference, modalities=["imc"], storage_options=options, workers=WORKERS)
            files = sorted(q.relative_to(reference).as_posix() for q in reference.rglob("*") if q.is_file())
            files.remove(MANIFEST)
            nbytes = sum((reference / f).stat().st_size for f in files)
            listing = work / "files.txt"
            listing.write_text("".join(f"{f}\n" for f in files))

            fetch_times, rclone_times = [], []
            for i in range(p["repeat"]):
                dest = work / f"fetch{i}" / NAME
                fetch_times.append(_fetch_process(url, dest, options)[1])
                shutil.rmtree(dest.parent)
                copy = work / f"rclone{i}"
                rclone_times.append(_rclone(f"spora:spora/{NAME}", listing, copy, conf))
                shutil.rmtree(copy)
            t_fetch, t_rclone = min(fetch_times), min(rclone_times)

            # resume: kill when half of the blocks are written, rerun, count what the server sends
            blocks = sum(-(-(reference / f).stat().st_size // fetch_transfer._BLOCK) for f in files)
            dest = work / "resume" / NAME
            code, _ = _fetch_process(url, dest, options, {FAULT_POINT_ENV: f"fetch.part_written@{blocks // 2}"})
            on_disk = _on_disk(dest)
            remaining = sum(max((reference / f).stat().st_size - on_disk.get(f, 0), 0) for f in files)
            with s3.log.recording() as log:
                t0 = time.perf_counter()
                fetch_module.fetch(url, dest, modalities=["imc"], storage_options=options, workers=WORKERS)
                t_resume = time.perf_counter() - t0
            sent = sum(n for _, path, n in log.entries if not path.endswith(MANIFEST))
            server_rss = max(server_rss, psutil.Process().memory_info().rss)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = nbytes / 1e6
    return [
        Result(
            name="fetch_throughput",
            ratio=t_rclone / t_fetch,
            goal=">=0.9",
            what="spora_sd.fetch throughput / rclone copy throughput, same files, same moto server",
            details={
                "files": len(files),
                "MB": mb,
                "fetch s": t_fetch,
                "rclone s": t_rclone,
                "fetch MB/s": mb / t_fetch,
                "rclone MB/s": mb / t_rclone,
                "bench+moto RSS MB": server_rss / 1e6,
            },
        ),
        Result(
            name="fetch_resume",
            ratio=sent / max(remaining, 1),
            goal="<=1.1",
            what="bytes sent by the server to the rerun / bytes not on disk after the kill",
            details={
                "killed": "yes" if code == -9 else "no (finished first)",
                "MB on disk after kill": sum(on_disk.values()) / 1e6,
                "MB remaining": remaining / 1e6,
                "MB sent to rerun": sent / 1e6,
                "rerun s": t_resume,
            },
        ),
    ]
