"""A shared instance: PostgreSQL + an S3 bucket (moto on loopback); concurrent registrations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spora_sd.cli.app import app

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("backend", ["postgres"], indirect=True)]

runner = CliRunner()

# a second client: connects to the test instance (same LaminDB settings folder) and registers a cohort
_CLIENT = """
import sys
import lamindb as ln
ln.connect(sys.argv[1])
from spora_sd.lamin import register
artifact = register(sys.argv[2], tissue="lung", disease="NSCLC", organism="human")
print("UID", artifact.uid)
"""


def _clients(slug: str, cohorts: list[Path]) -> list[str]:
    """Run one client process per cohort, all at once; the uid each one got."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLIENT, slug, str(cohort)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cohort in cohorts
    ]
    uids = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        uids.append(next(line.split()[1] for line in out.splitlines() if line.startswith("UID ")))
    return uids


def test_cli_init_shared_instance(lamin) -> None:
    """`spora-sd lamin init DIR --db ... --storage s3://... --endpoint-url ...` (a second client's call)."""
    import lamindb as ln

    args = ["lamin", "init", str(lamin.storage), "--db", lamin.db, "--storage", lamin.shared]
    result = runner.invoke(app, [*args, "--endpoint-url", lamin.endpoint_url, "--name", "spora-test-pg"])
    assert result.exit_code == 0, result.output
    assert "spora-test-pg" in result.output
    assert lamin.shared in result.output
    shared = ln.Storage.filter(description="spora shared storage")
    assert [s.root for s in shared] == [f"{lamin.shared}?endpoint_url={lamin.endpoint_url}"]
    # an endpoint without an S3 storage is a mistake, said in one line
    result = runner.invoke(app, ["lamin", "init", str(lamin.storage), "--endpoint-url", "http://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "--storage" in result.output
    assert "Traceback" not in result.output


def test_copies_go_to_the_bucket(lamin, sdata_factory) -> None:
    from spora_sd.lamin import load, register

    artifact = register(sdata_factory("bucket2024synthetic"))
    assert artifact.storage.root.startswith(f"{lamin.shared}?endpoint_url=")
    bucket, _, prefix = lamin.shared.removeprefix("s3://").partition("/")
    listed = lamin.s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(f"{artifact.uid[:16]}.zarr/" in key for key in keys), keys[:10]
    assert load(artifact).tables["cells"].n_obs == 6


def test_two_processes_same_cohort_one_artifact(lamin, cohort_factory) -> None:
    import lamindb as ln

    cohort = cohort_factory("concurrent2024synthetic")
    uids = _clients(lamin.slug, [cohort, cohort])
    assert uids[0] == uids[1]
    assert ln.Artifact.filter(key=f"spora/{cohort.name}").count() == 1


def test_two_processes_different_cohorts_both_succeed(lamin, cohort_factory) -> None:
    import lamindb as ln

    cohorts = [cohort_factory("parallela2024synthetic"), cohort_factory("parallelb2024synthetic", seed=4)]
    uids = _clients(lamin.slug, cohorts)
    assert len(set(uids)) == 2
    for cohort, uid in zip(cohorts, uids, strict=True):
        assert ln.Artifact.get(key=f"spora/{cohort.name}").uid == uid
