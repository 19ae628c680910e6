"""Credentials the way users have them (AWS variables, storage_options, rclone.conf), the registry's
hosted locations, and secrets that never show: in logs, errors, reprs or ``sdata.attrs``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from remote.helpers import RemoteCohort
from servers import SECRET_KEY, S3Server
from typer.testing import CliRunner

import spora_sd
from spora_sd.cli.app import app
from spora_sd.errors import CohortNotFoundError
from spora_sd.testing import assert_cohorts_equal, assert_sdata_equal

_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS variables and an empty rclone configuration: a user who has set nothing up."""
    for name in _AWS:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "rclone.conf"
    monkeypatch.setenv("RCLONE_CONFIG", str(config))
    return config


def test_aws_variables_are_enough(
    s3_cohort: RemoteCohort, s3_server: S3Server, no_credentials: Path, monkeypatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    cohort = spora_sd.open_cohort(s3_cohort.url)  # no storage_options
    pd.testing.assert_frame_equal(cohort.tissues, spora_sd.open_cohort(s3_cohort.local).tissues)


def test_storage_options_win_over_the_variables(
    s3_cohort: RemoteCohort, s3_server: S3Server, no_credentials: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    cohort = spora_sd.open_cohort(s3_cohort.url, storage_options=s3_server.storage_options)
    assert cohort.tissue_ids() == spora_sd.open_cohort(s3_cohort.local).tissue_ids()


def test_rclone_remote_reads_and_copies_the_same_files(
    s3_cohort: RemoteCohort, s3_server: S3Server, no_credentials: Path, tmp_path: Path
) -> None:
    """The spec's set-up: an s3 remote in rclone.conf. rclone copies the cohort; spora-sd reads the same remote."""
    s3_server.rclone_config(no_credentials, remote="spora")
    location = "spora:spora/cohorts/small2025cohort"
    copy = tmp_path / "copy" / "small2025cohort"
    rclone = shutil.which("rclone") or "/usr/bin/rclone"
    # rclone's S3 client refuses AWS_CA_BUNDLE together with its own HTTP transport: a plain-HTTP loopback
    # server needs no CA bundle, so the variable is left out of rclone's environment
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    subprocess.run(
        [rclone, "copy", "--config", str(no_credentials), location, str(copy)], check=True, timeout=300, env=env
    )
    assert_cohorts_equal(copy, s3_cohort.local)  # rclone produced the same files
    remote = spora_sd.open_cohort(location)  # RCLONE_CONFIG points to the same file
    assert remote.remote and remote.dataset == "small2025cohort"
    assert_sdata_equal(spora_sd.to_spatialdata(remote), spora_sd.to_spatialdata(copy))


def test_registry_cohort_local_copy_wins_then_remote(
    s3_server: S3Server, no_credentials: Path, tmp_path: Path, monkeypatch
) -> None:
    local_root = tmp_path / "datasets"
    cohort = spora_sd.make_synthetic_cohort(
        tmp_path / "src", name="jackson2020single", n_tissues=1, image_size=64, n_cells=5, seed=1
    )
    s3_server.upload_folder(cohort, "jackson2020single")  # the registry's location: s3://spora/jackson2020single
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(local_root))
    local_root.mkdir()

    # neither a copy nor credentials: the error says exactly what to set
    with pytest.raises(CohortNotFoundError) as info:
        spora_sd.open_cohort("jackson2020")
    message = str(info.value)
    for needed in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "s3://spora/jackson2020single"):
        assert needed in message
    assert "rclone copy spora:spora/jackson2020single" in message and "RCLONE_CONFIG" in message

    # credentials set up: the hosted cohort is read remotely
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    opened = spora_sd.open_cohort("jackson2020")
    assert opened.remote and str(opened.path) == "s3://spora/jackson2020single"
    sdata = spora_sd.to_spatialdata("jackson2020", elements=("images",))
    assert len(sdata.images) == 2

    # a local copy exists: it wins
    shutil.copytree(cohort, local_root / "jackson2020single")
    assert spora_sd.open_cohort("jackson2020").path == (local_root / "jackson2020single").resolve()


def test_rclone_remote_named_spora_is_used_for_registry_cohorts(
    s3_server: S3Server, no_credentials: Path, tmp_path: Path, monkeypatch
) -> None:
    from spora_sd.datasets.registry import remote_location

    cohort = spora_sd.make_synthetic_cohort(
        tmp_path / "src",
        name="keren2018structured",
        n_tissues=1,
        image_size=64,
        n_cells=5,
        seed=2,
        modalities=("mibi",),
    )
    s3_server.upload_folder(cohort, "keren2018structured")
    monkeypatch.delenv("SPORA_DATASETS_DIR", raising=False)
    s3_server.rclone_config(no_credentials, remote="spora")
    assert remote_location("keren2018") == "spora:spora/keren2018structured"
    assert spora_sd.open_cohort("keren2018").tissue_ids() == spora_sd.open_cohort(cohort).tissue_ids()


def test_datasets_dir_may_be_a_url(
    s3_cohort: RemoteCohort, s3_server: S3Server, no_credentials: Path, monkeypatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SPORA_DATASETS_DIR", "s3://spora/cohorts")
    cohort = spora_sd.open_cohort("small2025cohort")
    assert cohort.remote and cohort.tissue_ids() == spora_sd.open_cohort(s3_cohort.local).tissue_ids()
    assert spora_sd.validate("small2025cohort").ok


def test_secrets_never_show(
    s3_cohort: RemoteCohort, s3_server: S3Server, caplog: pytest.LogCaptureFixture, no_credentials: Path, tmp_path: Path
) -> None:
    """The secret key is in storage_options; grep everything a user can see for it."""
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        cohort = spora_sd.open_cohort(s3_cohort.url, storage_options=s3_server.storage_options)
        sdata = spora_sd.to_spatialdata(cohort)
        seen += [repr(cohort), str(cohort.path), repr(cohort.path), repr(cohort.paths), json.dumps(cohort.summary())]
        seen.append(json.dumps(sdata.attrs, default=str))
        seen.append(repr(sdata))
        report = spora_sd.validate(s3_cohort.url, storage_options=s3_server.storage_options)
        seen += [str(report), report.to_json()]
        # errors: a missing object, a missing image, wrong credentials elsewhere
        for action in (
            lambda: cohort.image("small2025cohort_00000000_0000", "imc"),
            lambda: cohort.standardization("imc", param="uq_0.5"),
            lambda: spora_sd.open_cohort(s3_cohort.url + "-missing", storage_options=s3_server.storage_options),
        ):
            with pytest.raises(spora_sd.SporaError) as info:
                action()
            seen.append(str(info.value))
            seen.append(repr(info.value))
    seen += [record.getMessage() for record in caplog.records]
    result = CliRunner().invoke(app, ["info", s3_cohort.url, *_cli_options(s3_server)])
    assert result.exit_code == 0, result.output
    assert "small2025cohort" in result.output
    seen.append(result.output)
    text = "\n".join(seen)
    assert SECRET_KEY not in text
    assert "s3://spora/cohorts/small2025cohort" in text


def _cli_options(s3_server: S3Server) -> list[str]:
    """``--storage-option`` flags that reach ``s3_server`` (the secret on the command line, as users type it)."""
    return [
        "--storage-option",
        f"key={s3_server.storage_options['key']}",
        "--storage-option",
        f"secret={SECRET_KEY}",
        "--storage-option",
        f"client_kwargs.endpoint_url={s3_server.endpoint_url}",
    ]


def test_cli_commands_take_storage_options(
    s3_cohort: RemoteCohort, s3_server: S3Server, no_credentials: Path, tmp_path: Path
) -> None:
    options = _cli_options(s3_server)
    runner = CliRunner()
    result = runner.invoke(app, ["validate", s3_cohort.url, *options])
    assert result.exit_code == 0, result.output
    out = tmp_path / "c.zarr"
    result = runner.invoke(app, ["convert", s3_cohort.url, str(out), "--modalities", "imc", *options])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["tile", s3_cohort.url, "--tile-size", "64", "--output", str(tmp_path / "derived"), *options]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "derived" / "tiling" / "1_0mpp" / "default" / "64_tile_coordinates.parquet").is_file()
    result = runner.invoke(app, ["tile", s3_cohort.url, *options])
    assert result.exit_code == 1 and "output" in result.output
    assert SECRET_KEY not in result.output


def test_http_cohort_needs_no_credentials(http_cohort: RemoteCohort, no_credentials: Path) -> None:
    cohort = spora_sd.open_cohort(http_cohort.url)
    tissue = cohort.tissue_ids("imc")[0]
    np.testing.assert_array_equal(
        cohort.image(tissue, "imc")[:, :64, :64].compute(),
        spora_sd.open_cohort(http_cohort.local).image(tissue, "imc")[:, :64, :64].compute(),
    )
