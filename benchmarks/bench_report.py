"""QC report: ``write_qc_report`` on a cohort with pyramids, against reading every image at full resolution.

The baseline is what a thumbnail script without the pyramid does: read level 0 of every tissue
(``np.asarray(cohort.image(tissue, "imc"))``, all channels, one tissue at a time) and keep nothing.
The report reads one downsampled level per tissue, draws two thumbnails' worth of pixels, computes
the per-marker quantiles, encodes PNGs and writes the page; validation is left out (it is
``spora_sd.validate``'s own cost, the same with or without a report). Both read the same files,
alternating, best of ``repeat`` passes, after a warm-up (OS cache).

- ``report``: report time / full-resolution read time (goal <= 0.5: the pyramid must pay).
- ``report_rss``: peak RSS increase while writing the report / bytes of one level-0 image (goal
  <= 1.0: the report streams, it never holds the cohort, nor even a whole image). Measured in a
  fresh Python process (this one's allocator keeps the baseline's freed images), sampled every
  10 ms from after the imports and a one-tissue report (templates, codecs) to the end of the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import WORK, Result, synthetic_cohort, timed

# run in a child process: RSS sampled from after a warm-up (a one-tissue report) to the end of the
# full report. Not ru_maxrss: Linux carries the parent's high-water mark into a forked child.
RSS_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[3])
import spora_sd
from common import PeakRSS
cohort, out = sys.argv[1], sys.argv[2]
spora_sd.write_qc_report(cohort, out, validate=False, tissues=spora_sd.open_cohort(cohort).tissue_ids()[:1])
with PeakRSS() as rss:
    spora_sd.write_qc_report(cohort, out, validate=False)
print(json.dumps({"delta": rss.delta}))
"""

SIZES = {
    True: {"n_tissues": 3, "image_size": 128, "n_channels": 6, "n_cells": 30, "n_levels": 2},
    False: {"n_tissues": 24, "image_size": 1000, "n_channels": 30, "n_cells": 2000, "n_levels": 3},
}


def run(quick: bool) -> list[Result]:
    from spora_sd import open_cohort, write_qc_report

    path = synthetic_cohort(
        "benchreport2025cohort", quick, modalities=("imc",), size_jitter=0.0, tiling=False, **SIZES[quick]
    )
    cohort = open_cohort(path)
    tissues = cohort.tissue_ids("imc")
    out = WORK / ("quick" if quick else "full") / "report.html"

    def report() -> int:
        write_qc_report(cohort, out, validate=False)
        return out.stat().st_size

    def full_resolution() -> int:
        return sum(int(np.asarray(cohort.image(t, "imc")).shape[1]) for t in tissues)

    report(), full_resolution()  # warm-up: imports, OS cache
    repeat = 1 if quick else 3
    report_time = baseline_time = float("inf")
    for _ in range(repeat):
        t, size = timed(report)
        report_time = min(report_time, t)
        t, _ = timed(full_resolution)
        baseline_time = min(baseline_time, t)
    child = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path), str(out), str(Path(__file__).resolve().parent)],
        check=True,
        capture_output=True,
        text=True,
    )
    rss_delta = json.loads(child.stdout.strip().splitlines()[-1])["delta"]
    image_bytes = float(np.prod(cohort.image(tissues[0], "imc").shape) * 2)
    n = len(tissues)
    return [
        Result(
            "report",
            report_time / baseline_time,
            "<=0.5",
            "write_qc_report time (no validation) / reading level 0 of every image",
            {
                "tissues": float(n),
                "report ms/tissue": 1e3 * report_time / n,
                "level-0 ms/tissue": 1e3 * baseline_time / n,
                "page MB": size / 1e6,
            },
        ),
        Result(
            "report_rss",
            rss_delta / image_bytes,
            "<=1.0",
            "peak RSS increase while writing the report / bytes of one level-0 image",
            {"RSS MB": rss_delta / 1e6, "image MB": image_bytes / 1e6},
        ),
    ]
