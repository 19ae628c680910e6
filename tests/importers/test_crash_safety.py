"""Importers are as crash-safe as exports: real import processes killed with SIGKILL at named points.

Each import runs in its own process, forked from a server that imported the importers once
(tests/forkserver.py), with ``SPORA_SD_FAULT_POINT`` set (:mod:`spora_sd.io.atomic`), which kills it at
that point of the atomic write protocol: while samples are being written, when the manifest is written,
around the final rename or exchange and while the old cohort is deleted. After each kill the target
holds nothing, or a complete valid cohort that is exactly the old or the new one; the
next import succeeds and leaves no temporary file, folder or lock behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from forkserver import ForkServer

import spora_sd
from spora_sd.importers import from_ai4bmr, from_steinbock
from spora_sd.importers.synthetic_ai4bmr import make_ai4bmr_folder
from spora_sd.io.atomic import FAULT_POINT_ENV
from spora_sd.testing import assert_cohorts_equal

# one worker runs the module: its fork server and reference cohorts are made once, not on each worker
pytestmark = pytest.mark.xdist_group("importers-crash-safety")

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("SIGKILL is POSIX", allow_module_level=True)

STEINBOCK = Path(__file__).parents[1] / "data" / "imc_testdata_steinbock"
KEY = "jackson2020single"
FAST = {"standardization": False, "tiling": False}

_SETUP = """
from pathlib import Path

from spora_sd.importers import from_ai4bmr, from_steinbock
from spora_sd.importers.synthetic_ai4bmr import make_ai4bmr_folder


def warm_up(folder):  # the ai4bmr import only: a steinbock import here costs more than its one kill
    src = make_ai4bmr_folder(folder / "src", n_samples=1, size=32, seed=0)
    from_ai4bmr(src, folder, standardization=False, tiling=False)


def preload():  # the UniProt table behind the channel names (seconds to parse), cached for every child
    from spora_sd.ontologies.files import uniprot_entries

    uniprot_entries("HUMAN")


def run(job):
    importer = from_ai4bmr if job["kind"] == "ai4bmr" else from_steinbock
    importer(job["source"], job["destination"], overwrite=job["overwrite"], standardization=False, tiling=False)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    with ForkServer(tmp_path_factory.mktemp("server"), _SETUP) as srv:
        yield srv


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refs")
    new_src = make_ai4bmr_folder(root / "new", n_samples=3, size=48, seed=1)
    old_src = make_ai4bmr_folder(root / "old", n_samples=2, size=40, seed=2)
    return {
        "ai4bmr:src": new_src,
        "ai4bmr:new": from_ai4bmr(new_src, root / "new_cohort", **FAST),
        "ai4bmr:old": from_ai4bmr(old_src, root / "old_cohort", **FAST),
        "steinbock:src": STEINBOCK,
        "steinbock:new": from_steinbock(STEINBOCK, root / "steinbock_new" / "eling2021steinbock", **FAST),
    }


def _target(kind: str, parent: Path) -> Path:
    return parent / (KEY if kind == "ai4bmr" else "eling2021steinbock")


def _destination(kind: str, target: Path) -> Path:
    return target.parent if kind == "ai4bmr" else target  # ai4bmr: the datasets root


def _holds(target: Path, refs: dict[str, Path], kind: str) -> str:
    if not target.exists():
        return "nothing"
    report = spora_sd.validate(target, deep=True)  # every file against metadata/manifest.json too
    assert report.ok, str(report)
    for age in ("old", "new"):
        if f"{kind}:{age}" not in refs:
            continue
        try:
            assert_cohorts_equal(target, refs[f"{kind}:{age}"])
        except AssertionError:
            continue
        return age
    raise AssertionError(f"{target}: a valid cohort, but neither the old nor the new one")


#: (importer, over an existing cohort, rename fallback, fault point): the points of a new cohort's write,
#: of a replacement by exchange and by the rename fallback (the other points are the export's, covered by
#: tests/io/test_crash_safety.py; the importers reach them through the same export_workspace).
POINTS = [
    ("ai4bmr", False, False, "export.started"),
    ("ai4bmr", False, False, "atomic.written@1"),  # the first image complete, not yet renamed
    ("ai4bmr", False, False, "atomic.renamed@5"),  # in the middle of the samples
    ("ai4bmr", False, False, "manifest.written"),
    ("ai4bmr", False, False, "export.renamed"),
    ("ai4bmr", True, False, "export.marker_removed"),
    ("ai4bmr", True, False, "export.exchanged"),
    ("ai4bmr", True, False, "remove.partial"),  # the old cohort half deleted
    ("ai4bmr", True, True, "export.moved_aside"),  # no cohort until the next open
    ("steinbock", False, False, "atomic.renamed@5"),
]


@pytest.mark.parametrize(
    ("kind", "overwrite", "fallback", "point"),
    POINTS,
    ids=[f"{k}-{'over' if o else 'new'}{'-fallback' if f else ''}-{p}" for k, o, f, p in POINTS],
)
def test_kill_at_point(server, refs, tmp_path: Path, kind: str, overwrite: bool, fallback: bool, point: str) -> None:
    target = _target(kind, tmp_path / "out")
    target.parent.mkdir()
    if overwrite:
        shutil.copytree(refs[f"{kind}:old"], target)
    env = {FAULT_POINT_ENV: point, **({"SPORA_SD_ATOMIC_EXCHANGE": "0"} if fallback else {})}
    job = {"kind": kind, "source": str(refs[f"{kind}:src"]), "destination": str(_destination(kind, target))}
    code = server.ask({"job": {**job, "overwrite": overwrite, "env": env}})["status"]
    assert code == -signal.SIGKILL, f"the importer was not killed at {point} (exit code {code})"
    held = _holds(target, refs, kind)
    if held == "nothing" and overwrite:
        assert fallback, "an overwrite with renameat2 left no cohort"
        spora_sd.open_cohort(target)  # finds the staged complete new cohort and moves it in
        held = _holds(target, refs, kind)
        assert held == "new"
    assert held in (("old", "new") if overwrite else ("nothing", "new")), held
    # the next import (in this process, as in tests/io/test_crash_safety.py: only the killed one needs
    # its own process) succeeds and cleans up what the killed one left
    importer = from_ai4bmr if kind == "ai4bmr" else from_steinbock
    importer(refs[f"{kind}:src"], _destination(kind, target), overwrite=True, **FAST)
    assert _holds(target, refs, kind) == "new"
    assert sorted(os.listdir(target.parent)) == [target.name]  # no leftover, no lock file
