"""``consolidate_images``: consolidated metadata added to an existing cohort, local or on S3, atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from remote.helpers import fresh_s3_cohort
from servers import HttpServer

import spora_sd
from spora_sd.io.atomic import FAULT_POINT_ENV
from spora_sd.io.consolidated import CONSOLIDATED_KEY
from spora_sd.testing import assert_sdata_equal


def _groups(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ome.zarr/zarr.json"))


def _without_consolidated(small_cohort: Path, folder: Path) -> Path:
    """A copy of the cohort as a writer other than spora-sd makes it: no consolidated metadata."""
    root = shutil.copytree(small_cohort, folder / small_cohort.name)
    for group in _groups(root):
        meta = json.loads(group.read_text())
        del meta[CONSOLIDATED_KEY]
        group.write_text(json.dumps(meta, indent=2))
    return root


def test_local_cohort_is_consolidated_once(small_cohort: Path, tmp_path: Path) -> None:
    root = _without_consolidated(small_cohort, tmp_path)
    groups = _groups(root)
    assert spora_sd.consolidate_images(root) == len(groups)
    assert [json.loads(g.read_bytes()) for g in groups] == [json.loads(g.read_bytes()) for g in _groups(small_cohort)]
    stamps = [g.stat().st_mtime_ns for g in groups]
    assert spora_sd.consolidate_images(root) == 0  # idempotent: nothing rewritten
    assert [g.stat().st_mtime_ns for g in groups] == stamps
    assert sorted(p.name for p in groups[0].parent.iterdir()) == ["0", "zarr.json"]  # no temporary file left
    report = spora_sd.validate(root)
    assert report.ok, report.problems
    assert_sdata_equal(spora_sd.to_spatialdata(root), spora_sd.to_spatialdata(small_cohort))


def test_a_killed_run_leaves_every_group_file_whole_and_a_rerun_finishes(small_cohort: Path, tmp_path: Path) -> None:
    root = _without_consolidated(small_cohort, tmp_path)
    before = {g: g.read_bytes() for g in _groups(root)}
    code = f"import spora_sd; spora_sd.consolidate_images({str(root)!r})"
    # killed after the second group file's new content is written, before it is moved into place
    env = dict(os.environ, **{FAULT_POINT_ENV: "atomic.written@2"})
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == -9
    changed = [g for g, raw in before.items() if g.read_bytes() != raw]
    assert len(changed) == 1  # the first one; every other is its old self, none half written
    assert all(CONSOLIDATED_KEY in json.loads(g.read_text()) for g in changed)
    assert spora_sd.consolidate_images(root) == len(before) - 1
    report = spora_sd.validate(root)
    assert report.ok, report.problems  # the temporary file of the killed run is gone too


def test_s3_cohort_is_consolidated_by_one_put_per_group(s3_server, small_cohort: Path, tmp_path: Path) -> None:
    url = fresh_s3_cohort(s3_server, _without_consolidated(small_cohort, tmp_path))
    options = s3_server.storage_options
    n = len(_groups(small_cohort))
    with s3_server.log.recording() as log:
        assert spora_sd.consolidate_images(url, storage_options=options) == n
    puts = [p for method, p, _ in log.entries if method == "PUT"]
    assert len(puts) == n and all(p.split("?")[0].endswith(".ome.zarr/zarr.json") for p in puts)
    key = (
        url.removeprefix(f"s3://{s3_server.bucket}/")
        + "/"
        + _groups(small_cohort)[0].relative_to(small_cohort).as_posix()
    )
    stored = json.loads(s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read())
    assert stored == json.loads(_groups(small_cohort)[0].read_text())
    with s3_server.log.recording() as log:
        assert spora_sd.consolidate_images(url, storage_options=options) == 0
    assert not any(method == "PUT" for method, _, _ in log.entries)


def test_http_cohorts_are_read_only(small_cohort: Path) -> None:
    with HttpServer(small_cohort.parent) as server, pytest.raises(spora_sd.InvalidArgumentError, match="read-only"):
        spora_sd.consolidate_images(f"{server.url}/{small_cohort.name}")
