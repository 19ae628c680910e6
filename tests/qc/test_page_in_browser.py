"""The QC page in Debian's Chromium (headless, from disk): every row is there, thumbnails are drawn, no errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

import spora_sd


def test_report_opens_from_disk_in_chromium(small_cohort: Path, tmp_path: Path, browser_page) -> None:
    cohort = spora_sd.open_cohort(small_cohort)
    out = spora_sd.write_qc_report(small_cohort, tmp_path / "qc.html")
    page = browser_page.page
    page.goto(out.as_uri())

    ids = page.locator("tr.tissue td.id code").all_inner_texts()
    assert ids == cohort.tissue_ids()
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    n_thumbs = sum(len(cohort.tissue_ids(m)) for m in ("imc", "he"))
    thumbs = page.locator("img.thumb")
    assert thumbs.count() == n_thumbs
    for i in range(n_thumbs):  # what the browser drew, not what the file holds
        shot = np.asarray(Image.open(io.BytesIO(thumbs.nth(i).screenshot())).convert("RGB"))
        assert shot.std() > 10, f"thumbnail {i} is blank on screen"
    strips = page.locator(".marker img")
    assert strips.count() == len(cohort.panel("imc"))
    browser_page.assert_clean()  # no console error, no request leaving the machine
    shot = browser_page.screenshot("qc-report")
    assert Image.open(shot).size[1] > 1000  # the whole page: summary, markers and the tissue table
