"""The CLI: exit codes (0 ok, 1 problems or known errors, 2 usage) and no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from spora_sd.cli.app import app

runner = CliRunner()


def test_validate_ok(small_cohort: Path) -> None:
    result = runner.invoke(app, ["validate", str(small_cohort)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_json(small_cohort: Path) -> None:
    result = runner.invoke(app, ["validate", str(small_cohort), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True


def test_validate_problems_exit_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "missing2025x")])
    assert result.exit_code == 1
    assert "layout.root" in result.output and "Traceback" not in result.output


def test_usage_error_exit_2() -> None:
    assert runner.invoke(app, ["validate"]).exit_code == 2
    assert runner.invoke(app, ["validate", "a", "--no-such-option"]).exit_code == 2


def test_info(small_cohort: Path) -> None:
    result = runner.invoke(app, ["info", str(small_cohort)])
    assert result.exit_code == 0, result.output
    assert "small2025cohort" in result.output and "imc" in result.output
    data = json.loads(runner.invoke(app, ["info", str(small_cohort), "--json"]).stdout)
    assert data["n_tissues"] == 4 and data["modalities"]["imc"]["n_channels"] > 0


def test_info_unknown_cohort_is_a_clean_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path))
    result = runner.invoke(app, ["info", "jackson2020"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "rclone" in result.output


def test_make_synthetic(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "make-synthetic",
            str(tmp_path),
            "--name",
            "cli2025x",
            "--n-tissues",
            "2",
            "--image-size",
            "96",
            "--n-cells",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["validate", str(tmp_path / "cli2025x")]).exit_code == 0
    again = runner.invoke(app, ["make-synthetic", str(tmp_path), "--name", "cli2025x", "--n-tissues", "2"])
    assert again.exit_code == 1 and "Traceback" not in again.output


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "info", "make-synthetic", "demo"):
        assert command in result.output
