"""``spora-sd fetch``: options reach :func:`spora_sd.fetch`, progress and errors are one line, no secret shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import spora_sd
from spora_sd.cli.app import app

NAME = "clifetch2025cohort"
runner = CliRunner()


@pytest.fixture(scope="module")
def remote(s3_server, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("cli-fetch")
    cohort = spora_sd.make_synthetic_cohort(root, name=NAME, n_tissues=2, image_size=64, n_cells=8)
    return s3_server.upload_folder(cohort, f"cli/{NAME}")


def _options(s3_server, secret: str | None = None) -> list[str]:
    options = s3_server.storage_options
    return [
        f"--storage-option=key={options['key']}",
        f"--storage-option=secret={secret or options['secret']}",
        f"--storage-option=client_kwargs.endpoint_url={options['client_kwargs']['endpoint_url']}",
        f"--storage-option=client_kwargs.region_name={options['client_kwargs']['region_name']}",
    ]


def test_fetch_one_modality_with_storage_options(s3_server, remote: str, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    result = runner.invoke(
        app, ["-vv", "fetch", remote, str(dest), "--modalities", "imc", "--resolution", "1.0", *_options(s3_server)]
    )
    assert result.exit_code == 0, result.output
    assert f"fetched {remote} into {dest}" in result.output
    assert "files" in result.output and "MB" in result.output  # the progress bar: bytes and files
    assert s3_server.storage_options["secret"] not in result.output
    assert spora_sd.open_cohort(dest).missing == ["he/"]
    assert spora_sd.validate(dest, allow_partial=True, deep=True).ok
    again = runner.invoke(app, ["fetch", remote, str(dest), "--modalities", "imc", *_options(s3_server)])
    assert again.exit_code == 0, again.output
    assert "0.0 MB downloaded" in again.output


def test_errors_are_one_line_without_secrets(s3_server, remote: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["fetch", remote, str(tmp_path / NAME), "--modalities", "codex", *_options(s3_server)])
    assert result.exit_code == 1
    assert "no modality 'codex'" in result.output and "Traceback" not in result.output
    bad = runner.invoke(app, ["fetch", remote, str(tmp_path / NAME), "--resolution", "fine", *_options(s3_server)])
    assert bad.exit_code == 1 and "--resolution 'fine'" in bad.output
    from moto.core.authorization import enable_iam_authentication

    with enable_iam_authentication():
        denied = runner.invoke(
            app, ["-vv", "fetch", remote, str(tmp_path / NAME), *_options(s3_server, secret="cli-wrong-secret")]
        )
    assert denied.exit_code == 1, denied.output
    assert "access denied" in denied.output
    assert "cli-wrong-secret" not in denied.output and s3_server.storage_options["key"] not in denied.output
