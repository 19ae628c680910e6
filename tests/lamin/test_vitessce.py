"""Vitessce configs attached to registered cohorts, and `spora-sd view --artifact` on a local instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from spora_sd.lamin import register
from spora_sd.lamin.vitessce import artifact_url, attach_vitessce_config
from spora_sd.viewer.artifact import artifact_cohort

LABELS = {"tissue": "lung", "disease": "NSCLC", "organism": "human"}


def _config_json(config_artifact) -> dict:
    return json.loads(Path(config_artifact.cache()).read_text())


def test_a_spatialdata_copy_gets_its_vitessce_config(lamin, cohort_factory) -> None:
    cohort = cohort_factory(f"vitcopy{lamin.name}2024synthetic")
    artifact = register(cohort, mode="spatialdata", **LABELS)
    config_artifact = artifact._actions.first()
    assert config_artifact is not None, "register attached no Vitessce config"
    assert config_artifact.suffix == ".vitessce.json" and config_artifact.kind == "__lamindb_config__"
    # the config shows the first tissue of the store: its image, cell labels and cell types
    config = _config_json(config_artifact)
    files = config["datasets"][0]["files"]
    first = sorted(t for t in artifact.load(is_run_input=False).coordinate_systems)[0]
    assert config["name"] == first
    urls = {f["url"] for f in files}
    assert urls == {artifact_url(artifact)}
    (store,) = files
    assert store["fileType"] == "spatialdata.zarr"
    assert store["options"]["image"] == {"path": f"images/{first}__imc", "coordinateSystem": first}
    assert store["options"]["obsSegmentations"]["path"] == f"labels/{first}__cells"
    assert store["options"]["obsSets"]["obsSets"] == [{"name": "cell type", "path": "obs/cell_type"}]
    # attaching again (e.g. registering the same content) adds nothing
    assert register(cohort, mode="spatialdata", **LABELS).uid == artifact.uid
    assert attach_vitessce_config(artifact).uid == config_artifact.uid
    assert artifact._actions.count() == 1


def test_a_local_folder_in_place_gets_one_only_on_request(lamin, cohort_factory) -> None:
    cohort = cohort_factory(f"vitplace{lamin.name}2024synthetic")
    artifact = register(cohort, **LABELS)
    assert artifact._actions.count() == 0  # no hub reads a folder on this machine
    config_artifact = attach_vitessce_config(artifact, force=True)
    config = _config_json(config_artifact)
    image = next(f for f in config["datasets"][0]["files"] if f["fileType"] == "image.ome-zarr")
    tissue = config["name"]
    assert image["url"] == f"{artifact_url(artifact)}/imc/1_0mpp/images/{tissue}.ome.zarr"
    assert artifact._actions.first().uid == config_artifact.uid


def test_view_artifact_opens_a_registered_cohort(lamin, cohort_factory, tmp_path) -> None:
    cohort = cohort_factory(f"vitview{lamin.name}2024synthetic")
    in_place = register(cohort, **LABELS)
    copy = register(cohort, mode="spatialdata", **LABELS)
    # in place: the folder itself; a copy: written back to a cohort in the cache once
    assert artifact_cohort(in_place.uid, cache=tmp_path) == cohort.resolve()
    exported = artifact_cohort(copy.uid, cache=tmp_path)
    assert exported.is_relative_to(tmp_path) and exported.name == cohort.name
    assert artifact_cohort(copy.uid, cache=tmp_path) == exported  # reused
    # the command serves it: the page lists the cohort's tissues (the process connects to the test
    # instance first, as a user's `lamin connect` would have done)
    command = (
        "import sys, lamindb as ln; from spora_sd.cli.app import main; "
        f"ln.connect({lamin.slug!r}); sys.argv = ['spora-sd', 'view', '--artifact', {copy.uid!r}, '--no-open']; main()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SPORA_SD_VIEW_CACHE": str(tmp_path)},
    )
    try:
        url = ""
        for line in process.stdout:  # lamindb prints its own notes ("connected lamindb: ...") first
            if line.startswith("http://127.0.0.1:"):
                url = line.strip()
                break
        assert url, process.stderr.read()
        deadline = time.monotonic() + 120
        while True:
            try:
                tissues = json.loads(urllib.request.urlopen(f"{url}api/tissues.json", timeout=30).read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert tissues["cohort"] == cohort.name
        assert len(tissues["tissues"]) == 2
    finally:
        process.terminate()
        process.wait(timeout=60)
