"""Image checks of the validator: consolidated metadata (optional) must agree with the levels' own zarr.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import spora_sd


def _first_image(root: Path) -> Path:
    return sorted(root.glob("imc/*/images/*.ome.zarr"))[0]


def test_stale_consolidated_metadata_is_an_error_naming_the_group_file(small_cohort: Path, tmp_path: Path) -> None:
    root = shutil.copytree(small_cohort, tmp_path / small_cohort.name)
    image = _first_image(root)
    group = json.loads((image / "zarr.json").read_text())
    group["consolidated_metadata"]["metadata"]["0"]["shape"][1] += 1  # a level rewritten since, say
    (image / "zarr.json").write_text(json.dumps(group))
    report = spora_sd.validate(root)
    problems = [p for p in report.problems if p.rule == "image.consolidated"]
    assert len(problems) == 1 and not report.ok
    assert problems[0].file == f"{image.relative_to(root).as_posix()}/zarr.json"
    assert "level 0: shape" in problems[0].message


def test_images_without_consolidated_metadata_are_valid(small_cohort: Path, tmp_path: Path) -> None:
    root = shutil.copytree(small_cohort, tmp_path / small_cohort.name)
    image = _first_image(root)
    group = json.loads((image / "zarr.json").read_text())
    del group["consolidated_metadata"]  # optional: cohorts written by other tools have none
    (image / "zarr.json").write_text(json.dumps(group))
    report = spora_sd.validate(root)
    assert report.ok, report.problems
