"""``spora-sd import {ai4bmr,steinbock,mcmicro} SRC OUT``: exit codes and what they write."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from tests.importers.mcmicro_folder import make_mcmicro_sample
from typer.testing import CliRunner

import spora_sd
from spora_sd.cli.app import app
from spora_sd.importers.synthetic_ai4bmr import make_ai4bmr_folder

runner = CliRunner()
STEINBOCK = Path(__file__).parents[1] / "data" / "imc_testdata_steinbock"
FAST = ["--no-standardization", "--no-tiling"]


def test_import_ai4bmr(tmp_path: Path) -> None:
    src = make_ai4bmr_folder(tmp_path / "src", name="Keren2018", n_samples=2, size=24)
    result = runner.invoke(app, ["import", "ai4bmr", str(src), str(tmp_path / "datasets"), *FAST])
    assert result.exit_code == 0, result.output
    assert spora_sd.validate(tmp_path / "datasets" / "keren2018structured").ok
    again = runner.invoke(app, ["import", "ai4bmr", str(src), str(tmp_path / "datasets"), *FAST])
    assert again.exit_code == 1 and "overwrite" in again.output and "Traceback" not in again.output


def test_import_steinbock(tmp_path: Path) -> None:
    out = tmp_path / "eling2021steinbock"
    args = ["import", "steinbock", str(STEINBOCK), str(out), "--patient-key", "image_source_file", *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert spora_sd.validate(out).ok


def test_import_mcmicro(tmp_path: Path) -> None:
    make_mcmicro_sample(tmp_path / "runs", "slide0", size=32)
    out = tmp_path / "lin2023cycif"
    result = runner.invoke(app, ["import", "mcmicro", str(tmp_path / "runs"), str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert spora_sd.validate(out).ok


def test_bad_input_exits_1_and_bad_option_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["import", "ai4bmr", str(tmp_path / "Jackson2020"), str(tmp_path / "out")])
    assert missing.exit_code == 1 and "02_processed" in missing.output and "Traceback" not in missing.output
    bad = runner.invoke(app, ["import", "steinbock", str(STEINBOCK), str(tmp_path / "x2025y"), "--labels-kind", "x"])
    assert bad.exit_code == 2


@pytest.mark.parametrize("name", ["ai4bmr", "steinbock", "mcmicro"])
def test_every_parameter_has_an_option(name: str) -> None:
    """Reader and command do not drift apart (as spatialdata-io's tests/test_cli_alignment.py checks)."""
    from spora_sd import importers
    from spora_sd.cli import importers as commands

    function = getattr(importers, f"from_{name}")
    python = set(inspect.signature(function).parameters) - {"path", "out", "progress"}
    cli = set(inspect.signature(getattr(commands, name)).parameters) - {"src", "out"}
    assert python == cli
