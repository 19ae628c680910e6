"""The QC page: one self-contained HTML file with a row per tissue, marker strips and validation problems."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import spora_sd
from spora_sd.cli.app import app
from spora_sd.io.images import write_image
from spora_sd.qc.thumbnails import OUTLINE_RGB

IMG = re.compile(r'<img class="thumb" src="data:image/png;base64,([^"]+)" alt="(\w+) thumbnail of (\w+)"')


def thumbnails(html: str) -> list[tuple[str, str, np.ndarray]]:
    """(modality, tissue id, RGB pixels) of every thumbnail inlined in the page."""
    return [
        (modality, tissue, np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")))
        for data, modality, tissue in IMG.findall(html)
    ]


def marker_block(html: str, name: str) -> str:
    """The distribution entry of one imc marker."""
    return html.split(f"imc &middot; {name}</div>")[1].split('<div class="marker">')[0]


@pytest.fixture(scope="module")
def page(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spora_sd.write_qc_report(small_cohort, tmp_path_factory.mktemp("qc") / "qc.html")


def test_every_tissue_has_a_row_with_drawn_thumbnails(page: Path, small_cohort: Path) -> None:
    cohort = spora_sd.open_cohort(small_cohort)
    html = page.read_text()
    rows = re.findall(
        r'<tr class="tissue" id="tissue-(\d+)">\s*<td class="num">\d+</td>\s*<td class="id"><code>(\w+)', html
    )
    assert [t for _, t in rows] == cohort.tissue_ids()
    drawn = thumbnails(html)
    expected = [(t, m) for t in cohort.tissue_ids() for m in ("imc", "he") if t in cohort.tissue_ids(m)]
    assert sorted((t, m) for m, t, _ in drawn) == sorted(expected)
    for modality, tissue, rgb in drawn:
        assert 120 <= max(rgb.shape[:2]) <= 240  # about 160 px
        assert rgb.std() > 10, f"{modality} thumbnail of {tissue} is blank"
        # the palette PNG may shift the outline colour a little
        near_outline = (np.abs(rgb.astype(int) - OUTLINE_RGB).max(axis=2) < 24).sum()
        assert near_outline > max(rgb.shape[:2]), f"no tissue outline on {tissue}"  # a ring around the tissue
        if modality == "imc":  # the three markers all show up somewhere
            assert all(rgb[..., c].max() > 100 for c in range(3))


def test_page_content(page: Path, small_cohort: Path) -> None:
    cohort = spora_sd.open_cohort(small_cohort)
    html = page.read_text()
    cells = cohort.cells(["cell_type"])
    last = cohort.tissue_ids()[-1]  # the synthetic writer leaves ACTA2 out of the last tissue
    assert re.search(rf"{last}</code>.*?imc: ACTA2</span>", html, re.S)
    for tissue, n in cells.groupby("tissue_id").size().items():
        assert re.search(rf"{tissue}</code>.*?<td class=\"num\">{n:,}</td>", html, re.S)
    assert all(f"{name}</span>" in html or f">{name}" in html for name in cells["cell_type"].unique())
    for name in cohort.panel("imc"):
        assert f"imc &middot; {name}" in html
    assert "MKI67 <span" in html and "fails QC" in html  # the channel that fails QC is marked
    assert 'class="chip red">PTPRC' in html and 'class="chip blue">DNA1' in html
    assert "No problems" in html
    # every tissue has immune cells: PTPRC is not flagged (in test_problems... it is, once its stain fails)
    assert "low signal" not in marker_block(html, "PTPRC")


def test_self_contained_and_deterministic(page: Path, small_cohort: Path, tmp_path: Path) -> None:
    html = page.read_text()
    assert "<script" not in html.lower() and not re.search(r"<[^>]+\son\w+=", html), "no JavaScript"
    assert not re.search(r'(src|href)="(?!data:|#)', html), "every image is inlined, every link an anchor"
    again = spora_sd.write_qc_report(small_cohort, tmp_path / "again.html")
    assert again.read_bytes() == page.read_bytes()
    with pytest.raises(spora_sd.TargetExistsError):
        spora_sd.write_qc_report(small_cohort, again, overwrite=False)


def test_problems_failed_stains_and_missing_masks_are_shown(small_cohort: Path, tmp_path: Path) -> None:
    """A broken copy: one tissue's PTPRC stain failed, one lost its tissue mask, one its channels_per_tissue row."""
    root = tmp_path / small_cohort.name
    shutil.copytree(small_cohort, root)
    cohort = spora_sd.open_cohort(root)
    failed, unmasked = cohort.tissue_ids("imc")[0], cohort.tissue_ids("imc")[1]
    image = np.asarray(cohort.image(failed, "imc"))
    image[cohort.panel("imc").index("PTPRC")] = 0
    write_image(cohort.image_path(failed, "imc"), image, mpp=1.0, channel_names=cohort.tissue_channels(failed, "imc"))
    cohort.paths.tissue_mask(1.0, unmasked).unlink()
    unlisted = cohort.tissue_ids("imc")[2]
    cpt = cohort.channels_per_tissue("imc")
    cpt.drop(index=unlisted).to_parquet(cohort.paths.channels_per_tissue("imc"))

    html = spora_sd.write_qc_report(root, tmp_path / "qc.html", markers=["CD3E", "VIM", "H3C1"]).read_text()
    assert re.search(r"low signal.*#1</a>", marker_block(html, "PTPRC"))  # tissue 1 is flagged
    assert "INVALID" in html and "tissue_masks" in html  # the validator's problem is listed
    assert re.search(rf"{unmasked}</code>.*?no tissue mask", html, re.S)
    assert 'class="chip green">VIM' in html
    # the report goes on: the tissue without channel list gets its row, with the reason
    assert re.search(rf'{unlisted}</code>.*?<div class="error">imc: .*?no row for tissue', html, re.S)
    assert html.count('<tr class="tissue"') == 4


def test_arguments_are_checked(small_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(spora_sd.InvalidArgumentError, match="not in the imc panel"):
        spora_sd.write_qc_report(small_cohort, tmp_path / "x.html", markers=["CD3"])
    with pytest.raises(spora_sd.InvalidArgumentError, match="not in"):
        spora_sd.write_qc_report(small_cohort, tmp_path / "x.html", tissues=["small2025cohort_00000000_0000"])
    assert not (tmp_path / "x.html").exists()
    one = spora_sd.open_cohort(small_cohort).tissue_ids()[1]
    html = spora_sd.write_qc_report(small_cohort, tmp_path / "one.html", tissues=[one], validate=False).read_text()
    assert html.count('class="tissue"') == 1 and one in html and "Not run" in html


def test_cli(small_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "qc.html"
    result = CliRunner().invoke(app, ["report", str(small_cohort), str(out), "--markers", "CD3E,VIM", "--size", "64"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote {out}" in result.output.replace("\n", "")
    assert all(48 <= max(rgb.shape[:2]) <= 96 for _, _, rgb in thumbnails(out.read_text()))
    bad = CliRunner().invoke(app, ["report", str(small_cohort), str(tmp_path / "bad.html"), "--markers", "NOPE"])
    assert bad.exit_code == 1 and "not in the imc panel" in bad.output and "Traceback" not in bad.output


def test_real_steinbock_cohort(tmp_path: Path) -> None:
    """Real IMC data (tests/data/imc_testdata_steinbock, 15 images) through the existing conversion path."""
    import spatialdata_io

    data = Path(__file__).parents[1] / "data" / "imc_testdata_steinbock"
    sdata = spatialdata_io.steinbock(data, labels_kind="deepcell")
    root = spora_sd.from_spatialdata(sdata, tmp_path, dataset="eling2021steinbock", mpp=1.0)
    html = spora_sd.write_qc_report(root, tmp_path / "qc.html").read_text()
    cohort = spora_sd.open_cohort(root)
    assert html.count('<tr class="tissue"') == len(cohort.tissue_ids()) == 15
    assert 'class="chip green">Cytokeratin 5' in html and 'class="chip blue">H3K27Ac' in html
    drawn = thumbnails(html)
    assert len(drawn) == 15 and all(rgb.std() > 5 for _, _, rgb in drawn)
    cells = cohort.cells([]).groupby("tissue_id").size()
    assert f"{cells.sum():,} cells" in html


def test_tissue_jobs_travel_to_dask_workers(small_cohort: Path) -> None:
    """A job is plain data: it pickles (as dask.distributed needs) and gives the same row after the trip."""
    import pickle

    from spora_sd.qc.tissues import run_tissue_job, tissue_jobs

    cohort = spora_sd.open_cohort(small_cohort)
    job = tissue_jobs(cohort, {"imc": ("PTPRC", "KRT5", "DNA1")}, 64)[0]
    here, there = run_tissue_job(job), run_tissue_job(pickle.loads(pickle.dumps(job)))
    assert here.thumbnails == there.thumbnails and set(here.thumbnails) == {"imc"}
    np.testing.assert_array_equal(here.quantiles["imc"], there.quantiles["imc"])


def test_same_page_on_a_dask_client(page: Path, small_cohort: Path, tmp_path: Path) -> None:
    """With a dask.distributed client active, tissues run as tasks; rows come back in table order."""
    from distributed import Client, LocalCluster, get_task_stream

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
        get_task_stream() as tasks,
    ):
        out = spora_sd.write_qc_report(small_cohort, tmp_path / "qc.html")
    assert sum("run_tissue_job" in t["key"] for t in tasks.data) == len(spora_sd.open_cohort(small_cohort).tissue_ids())
    assert out.read_bytes() == page.read_bytes()
