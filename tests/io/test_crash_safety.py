"""Crash safety and concurrent writers, with real processes killed by SIGKILL at named points.

Every export (``from_spatialdata``, ``make_synthetic_cohort``) and store write (``write_spatialdata``)
is killed at each fault point of :mod:`spora_sd.io.atomic` around its renames and deletions
(``SPORA_SD_FAULT_POINT``), and at random times. After each kill the target holds nothing, or a
complete valid cohort that is exactly the old one or the new one; then the next write succeeds and
leaves no temporary file, folder or lock behind.

The killed writers are forked from one server process per test module (tests/forkserver.py), which
imported spora-sd once (before any thread exists): a kill costs the export's own time, not an
interpreter start.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forkserver import LOCKED, OK, ForkServer

import spora_sd
from spora_sd.errors import TargetLockedError
from spora_sd.io.atomic import FAULT_POINT_ENV, clean_leftovers, lock_path, recover, target_lock
from spora_sd.io.manifest import read_manifest
from spora_sd.testing import assert_cohorts_equal

# one worker runs the module: its fork server and reference cohorts are made once, not on each worker
pytestmark = pytest.mark.xdist_group("io-crash-safety")

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("SIGKILL and fork are POSIX", allow_module_level=True)

NAME = "crash2025safety"
SMALL = {"n_tissues": 2, "image_size": 64, "n_cells": 10}

_SETUP = """
import spatialdata  # noqa: F401  (imported once, before any fork)
from pathlib import Path

from spora_sd.convert.from_spatialdata import from_spatialdata
from spora_sd.convert.to_spatialdata import to_spatialdata
from spora_sd.convert.store import write_spatialdata
from spora_sd.datasets.synthetic.writer import make_synthetic_cohort


def warm_up(folder):
    root = make_synthetic_cohort(folder, name="warm2025up", n_tissues=1, image_size=32, n_cells=4)
    sdata = to_spatialdata(root)
    from_spatialdata(sdata, folder / "again" / root.name)
    write_spatialdata(sdata, folder / "store.zarr")


def run(job):
    target = Path(job["target"])
    if job["kind"] == "from_spatialdata":
        sdata = to_spatialdata(job["source"])
        from_spatialdata(sdata, target, overwrite=job["overwrite"])
    elif job["kind"] == "synthetic":
        make_synthetic_cohort(target.parent, name=target.name, seed=job["seed"], overwrite=job["overwrite"],
                              **job["size"])
    elif job["kind"] == "store":
        write_spatialdata(to_spatialdata(job["source"]), target, overwrite=job["overwrite"])
    else:
        raise ValueError(job["kind"])
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    with ForkServer(tmp_path_factory.mktemp("server"), _SETUP) as srv:
        yield srv


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Cohort "old" (seed 0) and "new" (seed 1), one name; and the stores written from each."""
    base = tmp_path_factory.mktemp("refs")
    out = {
        age: spora_sd.make_synthetic_cohort(base / age, name=NAME, seed=seed, **SMALL)
        for age, seed in (("old", 0), ("new", 1))
    }
    for age in ("old", "new"):
        out[f"{age}.zarr"] = spora_sd.write_spatialdata(spora_sd.to_spatialdata(out[age]), base / f"{age}.zarr")
    out["sdata"] = spora_sd.to_spatialdata(out["new"])  # lazy: read for each write again
    return out


# --------------------------------------------------------------------------------------------------
# what a target may hold


def _same_tree(a: Path, b: Path) -> bool:
    """Equal files, byte for byte (a SpatialData store)."""

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    if files(a) != files(b):
        return False
    return all(filecmp.cmp(a / rel, b / rel, shallow=False) for rel in files(a))


def _holds(target: Path, refs: dict[str, Any], kind: str) -> str:
    """Which reference ``target`` is ("old" or "new"), or "nothing"; fails on anything else."""
    if not target.exists():
        return "nothing"
    if kind == "store":
        for age in ("old", "new"):
            if _same_tree(target, refs[f"{age}.zarr"]):
                return age
        raise AssertionError(f"{target}: neither the old nor the new store")
    report = spora_sd.validate(target, deep=True)  # also every file against metadata/manifest.json
    assert report.ok, str(report)
    for age in ("old", "new"):
        try:
            assert_cohorts_equal(target, refs[age])
        except AssertionError:
            continue
        return age
    raise AssertionError(f"{target}: a valid cohort, but neither the old nor the new one")


def _job(kind: str, target: Path, refs: dict[str, Any], *, overwrite: bool) -> dict:
    job = {"kind": kind, "target": str(target), "overwrite": overwrite}
    if kind in ("from_spatialdata", "store"):
        job["source"] = str(refs["new"])
    else:
        job.update(seed=1, size=SMALL)
    return job


def _prepare(tmp_path: Path, refs: dict[str, Any], kind: str, overwrite: bool) -> Path:
    parent = tmp_path / "out"
    parent.mkdir()
    target = parent / (f"{NAME}.zarr" if kind == "store" else NAME)
    if overwrite:
        shutil.copytree(refs["old.zarr" if kind == "store" else "old"], target)
    return target


def _write_again(kind: str, target: Path, refs: dict[str, Any]) -> None:
    """The next write, in this process: it must succeed and clean up what the killed one left."""
    if kind == "from_spatialdata":
        spora_sd.from_spatialdata(refs["sdata"], target, overwrite=True)
    elif kind == "synthetic":
        spora_sd.make_synthetic_cohort(target.parent, name=NAME, seed=1, overwrite=True, **SMALL)
    else:
        spora_sd.write_spatialdata(spora_sd.to_spatialdata(refs["new"]), target, overwrite=True)  # sets .path


def _after_kill(target: Path, refs: dict[str, Any], kind: str, *, overwrite: bool, fallback: bool) -> str:
    held = _holds(target, refs, kind)
    if held == "nothing" and overwrite and kind != "store":
        # Only the rename fallback can leave no target, for the instant between its two renames;
        # the next open moves the staged complete new cohort in.
        assert fallback, "an overwrite with renameat2 left no cohort"
        spora_sd.open_cohort(target)
        held = _holds(target, refs, kind)
        assert held == "new", held
    assert held in (("old", "new") if overwrite else ("nothing", "new")), held
    _write_again(kind, target, refs)
    assert _holds(target, refs, kind) == "new"
    assert sorted(os.listdir(target.parent)) == [target.name]  # no leftover, no lock file
    return held


# --------------------------------------------------------------------------------------------------
# kills at named points

#: (kind, overwrite, rename fallback, fault point): every rename and deletion of an export, a
#: replacement (renameat2 exchange and the rename fallback) and a store write.
POINTS = [
    # a new cohort (nothing at the target before)
    ("from_spatialdata", False, False, "lock.acquired"),
    ("from_spatialdata", False, False, "export.started"),
    ("from_spatialdata", False, False, "atomic.written@1"),  # first file complete, not renamed
    ("from_spatialdata", False, False, "atomic.renamed@3"),  # third file renamed into the work folder
    ("from_spatialdata", False, False, "manifest.written"),
    ("from_spatialdata", False, False, "export.marker_removed"),
    ("from_spatialdata", False, False, "export.renamed"),
    ("from_spatialdata", False, False, "export.cleaned"),  # the lock file is left
    # over an existing cohort: the atomic exchange
    ("from_spatialdata", True, False, "export.started"),
    ("from_spatialdata", True, False, "atomic.renamed@5"),
    ("from_spatialdata", True, False, "export.marker_removed"),
    ("from_spatialdata", True, False, "export.exchanged"),
    ("from_spatialdata", True, False, "remove.partial"),  # the old cohort half deleted
    ("from_spatialdata", True, False, "export.committed"),
    # over an existing cohort without renameat2: the rename fallback and its recovery
    ("from_spatialdata", True, True, "export.marker_removed"),
    ("from_spatialdata", True, True, "export.staged"),
    ("from_spatialdata", True, True, "export.moved_aside"),  # no cohort until the next open
    ("from_spatialdata", True, True, "export.moved_in"),
    ("from_spatialdata", True, True, "remove.partial"),
    # the synthetic generator
    ("synthetic", False, False, "export.started"),
    ("synthetic", False, False, "atomic.written@4"),
    ("synthetic", False, False, "manifest.written"),
    ("synthetic", False, False, "export.renamed"),
    ("synthetic", True, False, "export.marker_removed"),
    ("synthetic", True, False, "export.exchanged"),
    ("synthetic", True, False, "remove.partial"),
    ("synthetic", True, True, "export.moved_aside"),
    # a SpatialData store replaced (atomic_path on a folder)
    ("store", True, False, "atomic.written"),
    ("store", True, False, "atomic.exchanged"),
    ("store", True, False, "remove.partial"),
    ("store", True, True, "atomic.moved_aside"),
]


@pytest.mark.parametrize(
    ("kind", "overwrite", "fallback", "point"),
    POINTS,
    ids=[f"{k}-{'over' if o else 'new'}{'-fallback' if f else ''}-{p}" for k, o, f, p in POINTS],
)
def test_kill_at_point(server, refs, tmp_path: Path, kind: str, overwrite: bool, fallback: bool, point: str) -> None:
    target = _prepare(tmp_path, refs, kind, overwrite)
    job = _job(kind, target, refs, overwrite=overwrite)
    job["env"] = {FAULT_POINT_ENV: point, **({"SPORA_SD_ATOMIC_EXCHANGE": "0"} if fallback else {})}
    reply = server.ask({"job": job})
    assert reply["status"] == -signal.SIGKILL, f"the writer was not killed at {point}: {reply}"
    if kind == "store" and fallback and point.endswith("moved_aside"):
        # a store has no open_cohort: the next write finishes the replacement first
        assert not target.exists()
        recover(target)
        assert _holds(target, refs, kind) == "new"
    _after_kill(target, refs, kind, overwrite=overwrite, fallback=fallback)


# --------------------------------------------------------------------------------------------------
# kills at random times

RANDOM = [("from_spatialdata", True, seed) for seed in range(3)] + [("synthetic", True, seed) for seed in range(3)]


@pytest.mark.parametrize(("kind", "overwrite", "seed"), RANDOM, ids=[f"{k}-{s}" for k, _, s in RANDOM])
def test_kill_at_random_time(server, refs, tmp_path: Path, kind: str, overwrite: bool, seed: int) -> None:
    target = _prepare(tmp_path, refs, kind, overwrite)
    delay = random.Random(seed).uniform(0.02, 0.5)  # a whole write takes about 0.5 s here
    reply = server.ask({"job": _job(kind, target, refs, overwrite=overwrite), "kill_after": delay})
    assert reply["status"] in (OK, -signal.SIGKILL), reply
    _after_kill(target, refs, kind, overwrite=overwrite, fallback=False)


# --------------------------------------------------------------------------------------------------
# leftovers


def test_leftover_of_a_live_writer_is_left_alone(refs, tmp_path: Path) -> None:
    """A temporary folder whose writer file names a running process is not removed; a dead one's is."""
    target = _prepare(tmp_path, refs, "synthetic", False)
    live, dead = target.with_name(f".{NAME}.tmp-live"), target.with_name(f".{NAME}.tmp-dead")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        finished = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        for folder, pid in ((live, sleeper.pid), (dead, int(finished.stdout))):
            folder.mkdir()
            info = {"pid": pid, "hostname": os.uname().nodename, "boot_id": None}
            (folder / ".writer.json").write_text(json.dumps(info))
        spora_sd.make_synthetic_cohort(target.parent, name=NAME, seed=1, **SMALL)
        assert sorted(os.listdir(target.parent)) == sorted([NAME, live.name])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert clean_leftovers(target) == [live]
    assert os.listdir(target.parent) == [NAME]


# --------------------------------------------------------------------------------------------------
# concurrent writers


def test_second_writer_fails_fast_while_the_first_holds_the_lock(server, refs, tmp_path: Path) -> None:
    """The first export stops (SIGSTOP) with its lock held; the second fails at once, writing nothing."""
    target = _prepare(tmp_path, refs, "synthetic", False)
    first = _job("synthetic", target, refs, overwrite=False)
    first["env"] = {FAULT_POINT_ENV: "export.started:stop"}
    second = _job("from_spatialdata", target, refs, overwrite=False)
    timing = tmp_path / "second.seconds"
    second["timing"] = str(timing)
    reply = server.ask({"stopped": first, "meanwhile": second, "listing": str(target.parent)})
    assert reply["first_stopped"]
    assert reply["second"] == LOCKED
    # the second built nothing: only the first's lock and temporary folder were there meanwhile
    assert len(reply["listing_meanwhile"]) == 2 and lock_path(target).name in reply["listing_meanwhile"]
    assert float(timing.read_text()) < 5  # reading the source SpatialData included; no tissue written
    assert reply["first"] == OK
    assert _holds(target, refs, "synthetic") == "new"
    assert os.listdir(target.parent) == [NAME]


def test_the_lock_error_names_the_holder(tmp_path: Path) -> None:
    target = tmp_path / NAME
    with target_lock(target), pytest.raises(TargetLockedError, match=f"process {os.getpid()}"):
        spora_sd.make_synthetic_cohort(tmp_path, name=NAME, **SMALL)
    assert os.listdir(tmp_path) == []  # nothing written, the lock file gone


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_exports_at_once_one_wins(server, refs, tmp_path: Path, overwrite: bool) -> None:
    target = _prepare(tmp_path, refs, "synthetic", overwrite)
    jobs = [_job("synthetic", target, refs, overwrite=overwrite) for _ in range(2)]
    reply = server.ask({"jobs": jobs})
    assert sorted(reply["status"]) == [OK, LOCKED], reply
    assert _holds(target, refs, "synthetic") == "new"
    assert os.listdir(target.parent) == [NAME]


# --------------------------------------------------------------------------------------------------
# the manifest


def test_manifest_finds_swapped_and_altered_files(refs, tmp_path: Path) -> None:
    root = shutil.copytree(refs["new"], tmp_path / NAME)
    assert read_manifest(root) is not None
    assert spora_sd.validate(root, deep=True).ok
    shards = sorted(p for p in root.glob("imc/*/images/*.ome.zarr/0/c/**/*") if p.is_file())
    assert len(shards) >= 2
    a, b = shards[0], shards[1]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)  # two shards swapped: each is a valid shard, of the wrong tissue
    tiles = next(root.glob("tiling/*/*/*_tile_stats.parquet"))
    tiles.write_bytes(tiles.read_bytes()[:-1] + b"\0")
    (root / "metadata" / "notes.txt").write_text("added by hand")
    report = spora_sd.validate(root, deep=True)
    mismatched = {p.file for p in report.problems if p.rule == "manifest.mismatch"}
    assert mismatched >= {str(a.relative_to(root)), str(b.relative_to(root))}
    assert str(tiles.relative_to(root)) in mismatched
    unlisted = [p for p in report.problems if p.rule == "manifest.unlisted"]
    assert [p.file for p in unlisted] == ["metadata/notes.txt"] and unlisted[0].severity == "warning"
    assert not any(p.rule.startswith("manifest.") for p in spora_sd.validate(root).problems)  # deep only


def test_manifest_missing_file_and_bad_manifest(refs, tmp_path: Path) -> None:
    root = shutil.copytree(refs["new"], tmp_path / NAME)
    next(root.glob("segmentations/*/tissue_masks/*.npz")).unlink()
    rules = {p.rule for p in spora_sd.validate(root, deep=True).problems}
    assert "manifest.file_missing" in rules
    manifest = root / "metadata" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["files"]["../outside"] = {"size": 1, "crc32c": "00000000"}
    manifest.write_text(json.dumps(data))
    problems = [p for p in spora_sd.validate(root, deep=True).problems if p.rule.startswith("manifest.")]
    assert [p.rule for p in problems] == ["manifest.unreadable"]
    manifest.write_text("{not json")
    assert "manifest.unreadable" in {p.rule for p in spora_sd.validate(root, deep=True).problems}
    manifest.unlink()  # the manifest is optional
    assert not any(p.rule.startswith("manifest.") for p in spora_sd.validate(root, deep=True).problems)


def test_in_place_writers_keep_the_manifest_current(refs, tmp_path: Path) -> None:
    root = shutil.copytree(refs["new"], tmp_path / NAME)
    spora_sd.compute_tiling(root, tile_size=16, overwrite=True)
    spora_sd.compute_standardization(root, "imc", upper_quantile=0.9)
    report = spora_sd.validate(root, deep=True)
    assert report.ok and not [p for p in report.problems if p.rule.startswith("manifest.")], str(report)
    assert any(rel.startswith("tiling/") and "16_tile" in rel for rel in read_manifest(root)["files"])


def test_fault_points_cost_nothing_when_unarmed(tmp_path: Path) -> None:
    """Without the variable, a point is one environment look-up (and the module reads no other state)."""
    from spora_sd.io.atomic import _fault_point

    assert FAULT_POINT_ENV not in os.environ
    start = time.perf_counter()
    for _ in range(10_000):
        _fault_point("export.renamed")
    assert time.perf_counter() - start < 0.5
