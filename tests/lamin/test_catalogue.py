"""Registry cohorts registered straight from the bucket (tables only), and the catalogue of all of them.

The registry's cohorts live at ``s3://spora/<key>`` (``cohorts.yaml``: ``location``), which is the
bucket of the session's moto server (tests/servers.py). Small synthetic cohorts named after registry
keys are uploaded there; ``$SPORA_DATASETS_DIR`` points to an empty folder (or one holding a single
local copy), and the credentials are the AWS variables, ``AWS_ENDPOINT_URL`` included, as a user
would set them. The request log of the server says what was read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spora_sd.cli.app import app
from spora_sd.errors import CohortNotFoundError
from spora_sd.lamin import get_artifact, load, register, register_catalogue, search
from spora_sd.lamin.catalogue import Catalogue, CatalogueEntry

runner = CliRunner()
SMALL = {"image_size": 64, "n_cells": 12, "modalities": ("imc",), "standardization": False, "tiling": False}
#: registry keys backed by a synthetic cohort in the bucket (danenberg also has a local copy)
HOSTED = ("jackson2020single", "cords2024cancer", "keren2018structured", "danenberg2022breast")


@pytest.fixture(scope="module")
def registry_cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small synthetic cohort per registry key of :data:`HOSTED`, written once."""
    import spora_sd

    root = tmp_path_factory.mktemp("registry-cohorts")
    return {
        key: spora_sd.make_synthetic_cohort(root, name=key, n_tissues=2, seed=i, **SMALL)
        for i, key in enumerate(HOSTED)
    }


def _clear(s3, prefix: str) -> None:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/").get("Contents", [])
    if listed:
        client.delete_objects(Bucket=s3.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})


@pytest.fixture(scope="module", autouse=True)
def _registry_prefixes_left_empty(s3_server):
    """Other test modules (tests/remote) upload their own cohorts to the same registry prefixes of the
    session's bucket: leave them empty, as found."""
    yield
    for key in HOSTED:
        _clear(s3_server, key)
    _forget_listings()


def _forget_listings() -> None:
    """s3fs keeps one filesystem per set of options in the process, with a listing cache: after
    changing objects behind its back, the next reader must list afresh."""
    import s3fs

    for fs in list(s3fs.S3FileSystem._cache.values()):
        fs.invalidate_cache()
    s3fs.S3FileSystem.clear_instance_cache()


def _host(s3, cohort: Path) -> str:
    """Upload ``cohort`` to the registry's location ``s3://spora/<key>``, replacing whatever was there.

    Byte-identical uploads keep the same ETags, so the fingerprint of what was registered holds.
    """
    _clear(s3, cohort.name)
    url = s3.upload_folder(cohort, cohort.name)
    _forget_listings()
    return url


@pytest.fixture
def bucket_only(lamin_s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The AWS variables of the moto server, no rclone configuration, an empty ``$SPORA_DATASETS_DIR``."""
    for name, value in lamin_s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "no-rclone.conf"))
    local = tmp_path / "datasets"
    local.mkdir()
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(local))
    return local


def _objects(cohort: Path) -> set[str]:
    return {f"/spora/{cohort.name}/{p.relative_to(cohort).as_posix()}" for p in cohort.rglob("*") if p.is_file()}


def _is_pixels(path: str) -> bool:
    return ".zarr" in path or ".npz" in path  # image stores (chunks and metadata), cell masks


def test_registry_key_with_only_the_hosted_copy(lamin, lamin_s3, bucket_only: Path, registry_cohorts) -> None:
    """`spora-sd lamin register jackson2020` with only s3://spora/jackson2020single: tables read, no pixels."""
    import lamindb as ln

    cohort = registry_cohorts["jackson2020single"]
    url = _host(lamin_s3, cohort)
    assert not any(bucket_only.iterdir())
    with lamin_s3.log.recording() as log:
        result = runner.invoke(app, ["lamin", "register", "jackson2020"])
    assert result.exit_code == 0, result.output
    assert "spora/jackson2020single " in result.output
    assert "breast cancer" in result.output
    read = [p.split("?", 1)[0] for p in log.paths() if "list-type=2" not in p]
    objects = _objects(cohort)
    assert read and not [p for p in read if _is_pixels(p)]  # no image chunk or store metadata, no mask
    # what was read: the tables and metadata of the cohort (and bucket look-ups by lamindb)
    tables = {p for p in objects if not _is_pixels(p)}
    assert {p for p in read if p in objects} <= tables
    assert {p for p in read if p not in objects} <= {"/spora", "/lamindata"}
    assert log.bytes_sent < sum((cohort / p.split("/", 3)[3]).stat().st_size for p in objects)

    # the Python API on the same registry name: the same artifact, found by a listing alone
    with lamin_s3.log.recording() as log:
        artifact = register("jackson2020")
    assert all("list-type=2" in p for p in log.paths())
    assert artifact.key == "spora/jackson2020single"
    assert artifact.path.as_posix() == url  # in place, at the registry's location
    assert artifact._hash_type == "spora-s3-etag"
    assert ln.Artifact.filter(key=artifact.key, hash=artifact.hash).count() == 1
    labels = {
        "tissue": [t.ontology_id for t in artifact.tissues.all()],
        "disease": [d.ontology_id for d in artifact.diseases.all()],
        "organism": [o.ontology_id for o in artifact.organisms.all()],
        "assay": [a.ontology_id for a in artifact.experimental_factors.all()],
    }
    assert labels == {  # the registry's terms (cohorts.yaml)
        "tissue": ["UBERON:0000310"],
        "disease": ["MONDO:0007254"],
        "organism": ["NCBITaxon:9606"],
        "assay": ["OBI:0003096"],
    }
    assert artifact.uid in set(search(tissue="breast", disease="breast cancer")["uid"])
    assert artifact.uid not in set(search(tissue="lung")["uid"])
    assert get_artifact("jackson2020single").uid == artifact.uid
    sdata = load(artifact)  # lazily, from the bucket
    assert len(sdata.images) == 2
    assert all(type(image.data).__module__.startswith("dask") for image in sdata.images.values())
    assert sdata.attrs["bio"]["tissue_ontology_id"] == "UBERON:0000310"


# the catalogue is a loop over register(), whose S3 in-place path runs on both backends above: once is enough
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_catalogue_of_registry_cohorts(lamin, lamin_s3, bucket_only: Path, registry_cohorts) -> None:
    """Hosted cohorts, one also local (the local copy wins), one with no copy; then query by biology."""
    import shutil

    keys = ["cords2024cancer", "keren2018structured", "danenberg2022breast", "schurch2020coordinated"]
    for key in keys[:3]:
        _host(lamin_s3, registry_cohorts[key])
    local = Path(shutil.copytree(registry_cohorts["danenberg2022breast"], bucket_only / "danenberg2022breast"))
    with lamin_s3.log.recording() as log:
        catalogue = register_catalogue(["cords2024", "keren2018", "danenberg2022", "schurch2020"], progress=True)
    assert [e.key for e in catalogue.entries] == keys
    status = {e.key: e.status for e in catalogue.entries}
    assert status["schurch2020coordinated"] == "unreachable"  # nothing under its prefix: reported, the rest go on
    assert {status[k] for k in keys[:3]} == {"registered"}
    reason = catalogue.with_status("unreachable")[0].reason
    assert "s3://spora/schurch2020coordinated" in reason and "\n" not in reason
    where = {e.key: e.location for e in catalogue.entries}
    assert where["danenberg2022breast"] == local.as_posix()  # local first
    assert where["cords2024cancer"] == "s3://spora/cords2024cancer"
    assert not [p for p in log.paths() if _is_pixels(p)]  # tables only, for the whole catalogue
    assert "/spora/danenberg2022breast/" not in "".join(log.paths())

    found = set(search(tissue="breast", disease="breast cancer")["key"]) & {f"spora/{k}" for k in keys}
    assert found == {"spora/keren2018structured", "spora/danenberg2022breast"}  # TNBC is a breast cancer
    found = set(search(disease="MONDO:0005494")["key"]) & {f"spora/{k}" for k in keys}
    assert found == {"spora/keren2018structured"}
    found = set(search(tissue="UBERON:0002048", disease="non-small cell lung carcinoma")["key"])
    assert found & {f"spora/{k}" for k in keys} == {"spora/cords2024cancer"}

    # again, from the command line: every reachable cohort unchanged (listings only), the same reason
    with lamin_s3.log.recording() as log:
        result = runner.invoke(app, ["lamin", "catalogue", *keys])
    assert result.exit_code == 0, result.output
    assert "0 registered, 3 unchanged, 1 unreachable, 0 failed" in result.output
    assert "schurch2020coordinated" in result.output and "no such cohort" in result.output
    assert all("list-type=2" in p for p in log.paths())


def test_catalogue_without_credentials_or_copies(bucket_only: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No copy and no way to the bucket: every cohort unreachable with the registry's one-line reason."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    catalogue = register_catalogue(["keren2018", "schurch2020coordinated"])
    assert catalogue.summary() == "0 registered, 0 unchanged, 2 unreachable, 0 failed"
    for entry in catalogue.entries:
        assert entry.location == "" and entry.uid is None
        assert f"Cohort {entry.key!r} not found: looked for {bucket_only / entry.key}" in entry.reason
    frame = catalogue.to_frame()
    assert list(frame["status"]) == ["unreachable", "unreachable"]
    with pytest.raises(CohortNotFoundError, match="Unknown cohort 'nosuch2020'"):  # a typo fails before anything runs
        register_catalogue(["keren2018", "nosuch2020"])


def test_catalogue_summary() -> None:
    catalogue = Catalogue((CatalogueEntry("a2020x", "failed", reason="tissue 'brest'"),))
    assert catalogue.counts() == {"registered": 0, "unchanged": 0, "unreachable": 0, "failed": 1}
    assert catalogue.to_frame().loc[0, "reason"] == "tissue 'brest'"
